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
	items := q.items
	top := items[0]
	n := len(items) - 1
	last := items[n]
	items[n] = item{}
	items = items[:n]
	q.items = items
	if n == 0 {
		return top
	}
	// Sift the hole at the root down to where last belongs. When a node
	// has all four children, the smallest is found by a fixed tournament
	// of three comparisons (two of them independent) on a bounds-checked
	// sub-slice, rather than by a loop with a variable end.
	i := 0
	for {
		c := 4*i + 1
		var m int
		if c+3 < n {
			ch := items[c : c+4 : c+4]
			a, b := 0, 1
			if ch[1].less(ch[0]) {
				a = 1
			}
			if ch[3].less(ch[2]) {
				b = 3
			} else {
				b = 2
			}
			if ch[b].less(ch[a]) {
				a = b
			}
			m = c + a
		} else {
			if c >= n {
				break
			}
			m = c
			for j := c + 1; j < n; j++ {
				if items[j].less(items[m]) {
					m = j
				}
			}
		}
		if !items[m].less(last) {
			break
		}
		items[i] = items[m]
		i = m
	}
	items[i] = last
	return top
}

func (q *queue) peek() item { return q.items[0] }
