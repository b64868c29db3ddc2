package sim

// item is one entry of the event queue. The ordering key is kept beside
// the pointer so that sifting compares without touching the event.
type item struct {
	at  int64  // simulated nanoseconds
	seq uint64 // tie-break: the order in which events were scheduled
	ev  *event
}

func (a item) less(b item) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	return a.seq < b.seq
}

// queue is a 4-ary min-heap of items ordered by (at, seq). A 4-ary heap
// halves the depth of a binary one and keeps the children of a node in one
// cache line, which is what keeps the per-event cost flat as the number of
// pending events grows. (at, seq) is a total order, so the pop order is
// fully deterministic.
type queue struct {
	items []item
}

func (q *queue) len() int { return len(q.items) }

func (q *queue) push(it item) {
	q.items = append(q.items, it)
	i := len(q.items) - 1
	for i > 0 {
		p := (i - 1) / 4
		if !it.less(q.items[p]) {
			break
		}
		q.items[i] = q.items[p]
		i = p
	}
	q.items[i] = it
}

func (q *queue) pop() item {
	top := q.items[0]
	n := len(q.items) - 1
	last := q.items[n]
	q.items[n] = item{}
	q.items = q.items[:n]
	if n == 0 {
		return top
	}
	i := 0
	for {
		c := 4*i + 1
		if c >= n {
			break
		}
		m := c
		end := c + 4
		if end > n {
			end = n
		}
		for j := c + 1; j < end; j++ {
			if q.items[j].less(q.items[m]) {
				m = j
			}
		}
		if !q.items[m].less(last) {
			break
		}
		q.items[i] = q.items[m]
		i = m
	}
	q.items[i] = last
	return top
}

func (q *queue) peek() item { return q.items[0] }
