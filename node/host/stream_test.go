package host

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/clusterinfra/ci/node"
)

func TestStreamOrderedLargeAndCleanClose(t *testing.T) {
	a := startNode(t, 1, 2, nil, nil)
	b := startNode(t, 2, 2, nil, nil)
	introduce(t, a, b)
	s, peerEnd := dial(t, a, b, 1)
	if s.Peer() != 2 || s.Path() != 1 || peerEnd.Peer() != 1 || peerEnd.Path() != 1 {
		t.Fatalf("ends: dialler %v/%d, acceptor %v/%d", s.Peer(), s.Path(), peerEnd.Peer(), peerEnd.Path())
	}
	if g := a.r().find("open")[0]; g.s != s {
		t.Error("StreamOpened at the dialler is not the Stream Dial returned")
	}

	const n = 1000
	call(t, a, func(r *rec) {
		for i := range n {
			if err := s.Send(fmt.Appendf(nil, "message %d", i)); err != nil {
				t.Fatalf("Send %d: %v", i, err)
			}
		}
	})
	waitFor(t, func() bool { return b.r().count("msg") == n }, "%d messages", n)
	for i, g := range b.r().find("msg") {
		if want := fmt.Sprintf("message %d", i); string(g.data) != want || g.from != 1 || g.path != 1 {
			t.Fatalf("message %d: %q from %v/%d, want %q from n1/1", i, g.data, g.from, g.path, want)
		}
	}

	// A message bigger than the whole send buffer goes through when the
	// buffer is empty.
	big := make([]byte, 10<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	call(t, a, func(r *rec) {
		if err := s.Send(big); err != nil {
			t.Fatalf("Send of 10 MiB: %v", err)
		}
		big[0]++ // the stream keeps its own copy
	})
	waitFor(t, func() bool { return b.r().count("msg") == n+1 }, "the 10 MiB message")
	got := b.r().find("msg")[n].data
	big[0]--
	if !bytes.Equal(got, big) {
		t.Fatalf("10 MiB message damaged (len %d)", len(got))
	}

	// A message sent with Close is delivered, then the peer sees a clean
	// close; the closer hears nothing.
	call(t, a, func(r *rec) {
		if err := s.Send([]byte("last")); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if err := s.Send([]byte("after close")); err != node.ErrStreamClosed {
			t.Errorf("Send after Close: %v, want ErrStreamClosed", err)
		}
		s.Close() // twice is harmless
	})
	waitFor(t, func() bool { return b.r().count("closed") == 1 }, "StreamClosed at the peer")
	if g := b.r().find("closed")[0]; g.err != nil || g.s != peerEnd {
		t.Errorf("peer's StreamClosed: err %v (want nil), same stream %v", g.err, g.s == peerEnd)
	}
	msgs := b.r().find("msg")
	if last := msgs[len(msgs)-1]; string(last.data) != "last" || len(msgs) != n+2 {
		t.Errorf("last message %q of %d, want \"last\" of %d", last.data, len(msgs), n+2)
	}
	call(t, b, func(r *rec) {
		if err := peerEnd.Send([]byte("x")); err != node.ErrStreamClosed {
			t.Errorf("Send on a stream the peer closed: %v", err)
		}
	})
	time.Sleep(50 * time.Millisecond)
	if c := a.r().count("closed"); c != 0 {
		t.Errorf("the closer was told StreamClosed %d times", c)
	}
	if st := a.Stats(); st.StreamsBroken != 0 {
		t.Errorf("a clean close counted as broken: %+v", st)
	}
	if a.r().overlaps.Load()+b.r().overlaps.Load() != 0 {
		t.Error("overlapping callbacks")
	}
}

// TestStreamCloseBeforeOpen: a stream closed while still connecting, with
// a message queued, delivers it; the dialler hears nothing at all.
func TestStreamCloseBeforeOpen(t *testing.T) {
	a := startNode(t, 1, 1, nil, nil)
	b := startNode(t, 2, 1, nil, nil)
	introduce(t, a, b)
	call(t, a, func(r *rec) {
		s, err := r.env.Net().Dial(2, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send([]byte("early")); err != nil {
			t.Fatalf("Send before open: %v", err)
		}
		s.Close()
	})
	waitFor(t, func() bool { return b.r().count("closed") == 1 }, "the peer to see the close")
	if msgs := b.r().find("msg"); len(msgs) != 1 || string(msgs[0].data) != "early" {
		t.Errorf("peer got %v", msgs)
	}
	if g := b.r().find("closed")[0]; g.err != nil {
		t.Errorf("peer's StreamClosed: %v", g.err)
	}
	time.Sleep(30 * time.Millisecond)
	if c := a.r().count("open") + a.r().count("closed"); c != 0 {
		t.Errorf("the dialler that closed was told %d things", c)
	}
}

func TestStreamFullThenWritable(t *testing.T) {
	const buf = 64 << 10
	a := startNode(t, 1, 1, func(c *Config) { c.StreamBuffer = buf }, nil)
	b := startNode(t, 2, 1, func(c *Config) { c.Inbox = 4 }, nil)
	introduce(t, a, b)
	s, _ := dial(t, a, b, 0)

	// Stall the receiver: its loop waits, its inbox and then the TCP
	// buffers fill, and the sender's writer stops draining.
	release := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	if err := b.Do(func(node.Handler) { <-release }); err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 16<<10)
	sent := 0
	full := false
	for round := 0; round < 5000 && !full; round++ {
		writable := a.r().count("writable")
		call(t, a, func(r *rec) {
			for {
				binary.BigEndian.PutUint32(msg, uint32(sent))
				err := s.Send(msg)
				if err == node.ErrStreamFull {
					return
				}
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				sent++
			}
		})
		// Room appears while the kernel still takes data; once it stops,
		// no StreamWritable comes: the stream is really full.
		deadline := time.Now().Add(150 * time.Millisecond)
		for a.r().count("writable") == writable && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		full = a.r().count("writable") == writable
	}
	if !full {
		t.Fatal("the stream never stayed full while the receiver was stalled")
	}
	// The writer is stuck, so Buffered is stable: it must explain the
	// refusal.
	call(t, a, func(r *rec) {
		if b := s.Buffered(); b <= 0 || b+len(msg)+frameHeader <= buf {
			t.Errorf("ErrStreamFull with %d bytes buffered of %d", b, buf)
		}
		if err := s.Send(msg); err != node.ErrStreamFull {
			t.Errorf("Send on a full stream: %v", err)
		}
	})
	writable := a.r().count("writable")
	close(release)
	waitFor(t, func() bool { return a.r().count("writable") == writable+1 }, "StreamWritable after the receiver resumed")
	if g := a.r().find("writable")[writable]; g.s != s {
		t.Error("StreamWritable for another stream")
	}
	call(t, a, func(r *rec) {
		binary.BigEndian.PutUint32(msg, uint32(sent))
		if err := s.Send(msg); err != nil {
			t.Errorf("Send after StreamWritable: %v", err)
		}
		sent++
	})
	waitFor(t, func() bool { return b.r().count("msg") == sent }, "all %d messages", sent)
	for i, g := range b.r().find("msg") {
		if got := binary.BigEndian.Uint32(g.data); int(got) != i {
			t.Fatalf("message %d carries %d", i, got)
		}
	}
}

// TestStreamBackloggedThenWritable checks the low-water notification:
// with the receiver stalled the writer cannot drain, Backlogged reports
// the backlog and asks for a StreamWritable, which comes only once the
// receiver resumes and the backlog is below the mark.
func TestStreamBackloggedThenWritable(t *testing.T) {
	const mark = 256 << 10
	a := startNode(t, 1, 1, func(c *Config) { c.StreamBuffer = 32 << 20 }, nil)
	b := startNode(t, 2, 1, func(c *Config) { c.Inbox = 4 }, nil)
	introduce(t, a, b)
	s, _ := dial(t, a, b, 0)

	release := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	if err := b.Do(func(node.Handler) { <-release }); err != nil {
		t.Fatal(err)
	}
	// 16 MiB is far more than the socket buffers and the receiver's inbox
	// take, so the writer stalls with megabytes still queued.
	msg := make([]byte, 64<<10)
	const sent = 256
	call(t, a, func(r *rec) {
		for range sent {
			if err := s.Send(msg); err != nil {
				t.Fatalf("Send: %v", err)
			}
		}
		if s.Backlogged(1 << 40) {
			t.Error("Backlogged above everything that was sent")
		}
	})
	waitFor(t, func() bool {
		var bl bool
		call(t, a, func(r *rec) { bl = s.Buffered() >= 4<<20 })
		return bl
	}, "a backlog while the receiver is stalled")
	writable := a.r().count("writable")
	call(t, a, func(r *rec) {
		if !s.Backlogged(mark) {
			t.Errorf("Backlogged(%d) false with %d buffered", mark, s.Buffered())
		}
	})
	time.Sleep(100 * time.Millisecond)
	if a.r().count("writable") != writable {
		t.Fatal("StreamWritable while the backlog could not drain")
	}
	close(release)
	waitFor(t, func() bool { return a.r().count("writable") == writable+1 }, "StreamWritable once the backlog drained")
	call(t, a, func(r *rec) {
		if bl := s.Buffered(); bl >= mark {
			t.Errorf("StreamWritable with %d bytes still buffered (mark %d)", bl, mark)
		}
		if s.Backlogged(mark) {
			t.Error("Backlogged after draining")
		}
	})
	waitFor(t, func() bool { return b.r().count("msg") == sent }, "all %d messages", sent)
	if n := a.r().count("writable"); n != writable+1 {
		t.Errorf("%d StreamWritables, want one", n-writable)
	}
}

func TestDialNothingListening(t *testing.T) {
	a := startNode(t, 1, 1, nil, nil)
	if err := a.SetPeers(map[node.ID][]netip.AddrPort{2: {freePort(t)}}); err != nil {
		t.Fatal(err)
	}
	var s node.Stream
	call(t, a, func(r *rec) {
		var err error
		if s, err = r.env.Net().Dial(2, 0); err != nil {
			t.Fatalf("Dial: %v", err)
		}
	})
	waitFor(t, func() bool { return a.r().count("closed") == 1 }, "StreamClosed for the failed dial")
	g := a.r().find("closed")[0]
	if g.s != s || !(errors.Is(g.err, node.ErrStreamReset) || errors.Is(g.err, node.ErrStreamTimeout)) {
		t.Errorf("StreamClosed(%v), want an error wrapping ErrStreamReset or ErrStreamTimeout", g.err)
	}
	if a.r().count("open") != 0 {
		t.Error("a failed dial was reported open")
	}
	call(t, a, func(r *rec) {
		if err := s.Send([]byte("x")); err != node.ErrStreamClosed {
			t.Errorf("Send on a failed dial: %v", err)
		}
	})
}

func TestDialSilentPeerTimesOut(t *testing.T) {
	a := startNode(t, 1, 1, func(c *Config) { c.StreamTimeout = 200 * time.Millisecond }, nil)
	silent, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if err := a.SetPeers(map[node.ID][]netip.AddrPort{2: {silent.addr}}); err != nil {
		t.Fatal(err)
	}
	call(t, a, func(r *rec) {
		if _, err := r.env.Net().Dial(2, 0); err != nil {
			t.Fatal(err)
		}
	})
	waitFor(t, func() bool { return a.r().count("closed") == 1 }, "the handshake to time out")
	if err := a.r().find("closed")[0].err; !errors.Is(err, node.ErrStreamTimeout) {
		t.Errorf("StreamClosed(%v), want ErrStreamTimeout", err)
	}
}

func TestPeerNodeCloseBreaksStream(t *testing.T) {
	a := startNode(t, 1, 1, nil, nil)
	b := startNode(t, 2, 1, nil, nil)
	introduce(t, a, b)
	s, _ := dial(t, a, b, 0)
	b.closeNode(t)
	waitFor(t, func() bool { return a.r().count("closed") == 1 }, "StreamClosed after the peer node closed")
	g := a.r().find("closed")[0]
	if g.s != s || !errors.Is(g.err, node.ErrStreamReset) {
		t.Errorf("StreamClosed(%v), want an error wrapping ErrStreamReset", g.err)
	}
	time.Sleep(20 * time.Millisecond)
	if a.r().count("closed") != 1 {
		t.Error("StreamClosed delivered more than once")
	}
	if b.r().late.Load() != 0 {
		t.Error("the closed node got a callback")
	}
}

func TestHandshakeRefusesUnknownNode(t *testing.T) {
	a := startNode(t, 1, 1, nil, nil)
	b := startNode(t, 2, 1, nil, nil)
	// a knows b, b does not know a; and a believes n3 lives at b's
	// address.
	if err := a.SetPeers(map[node.ID][]netip.AddrPort{2: b.Addrs(), 3: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
	call(t, a, func(r *rec) {
		for _, p := range []node.ID{2, 3} {
			if _, err := r.env.Net().Dial(p, 0); err != nil {
				t.Fatal(err)
			}
		}
	})
	waitFor(t, func() bool { return a.r().count("closed") == 2 }, "both dials refused")
	for _, g := range a.r().find("closed") {
		if !errors.Is(g.err, node.ErrStreamReset) {
			t.Errorf("refused dial to %v: %v, want ErrStreamReset", g.from, g.err)
		}
	}
	waitFor(t, func() bool { return b.Stats().StreamsRejected == 2 }, "b to count 2 refusals")
	if c := b.r().count("open") + a.r().count("open"); c != 0 {
		t.Errorf("%d StreamOpened for refused streams", c)
	}
}

// rawPeer connects to tn's path 0 as node from, completing the handshake
// by hand, so that a test can send what a real node never would.
func rawPeer(t *testing.T, tn *tnode, from node.ID) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", tn.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	hello := []byte{streamMagic, streamVersion, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	wireID(hello[2:], from)
	wireID(hello[6:], tn.Self())
	if _, err := c.Write(hello); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, ackLen)
	if _, err := io.ReadFull(c, ack); err != nil {
		t.Fatalf("reading the handshake answer: %v", err)
	}
	if id, err := decodeAck(ack); err != nil || id != tn.Self() {
		t.Fatalf("answer %x: %v, %v", ack, id, err)
	}
	return c
}

func frame(msg []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(msg))), msg...)
}

func TestStreamEndings(t *testing.T) {
	tests := []struct {
		name    string
		send    func(c net.Conn)
		wantMsg int
		wantErr error // nil: a clean close
	}{
		{"end marker is a clean close", func(c net.Conn) {
			c.Write(append(frame([]byte("hi")), 0xFF, 0xFF, 0xFF, 0xFF))
		}, 1, nil},
		{"EOF without marker is a dead peer", func(c net.Conn) {
			c.Write(frame([]byte("hi")))
			c.Close()
		}, 1, node.ErrStreamReset},
		{"EOF inside a frame", func(c net.Conn) {
			c.Write(frame([]byte("hi"))[:4])
			c.Close()
		}, 0, node.ErrStreamReset},
		{"frame over MaxMessage", func(c net.Conn) {
			c.Write(binary.BigEndian.AppendUint32(nil, 1025))
		}, 0, node.ErrTooLarge},
		{"reset", func(c net.Conn) {
			c.Write(frame([]byte("hi")))
			c.(*net.TCPConn).SetLinger(0)
			time.Sleep(20 * time.Millisecond)
			c.Close()
		}, 1, node.ErrStreamReset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := startNode(t, 2, 1, func(c *Config) { c.MaxMessage = 1024 }, nil)
			if err := b.SetPeers(map[node.ID][]netip.AddrPort{1: {freePort(t)}}); err != nil {
				t.Fatal(err)
			}
			c := rawPeer(t, b, 1)
			tt.send(c)
			waitFor(t, func() bool { return b.r().count("closed") == 1 }, "StreamClosed")
			g := b.r().find("closed")[0]
			if tt.wantErr == nil && g.err != nil || tt.wantErr != nil && !errors.Is(g.err, tt.wantErr) {
				t.Errorf("StreamClosed(%v), want %v", g.err, tt.wantErr)
			}
			if got := b.r().count("msg"); got != tt.wantMsg {
				t.Errorf("%d messages, want %d", got, tt.wantMsg)
			}
			if b.r().count("open") != 1 || g.from != 1 {
				t.Errorf("opens %d, closed from %v", b.r().count("open"), g.from)
			}
		})
	}
}

func TestStreamSendTooLarge(t *testing.T) {
	a := startNode(t, 1, 1, func(c *Config) { c.MaxMessage = 100 }, nil)
	b := startNode(t, 2, 1, nil, nil)
	introduce(t, a, b)
	s, _ := dial(t, a, b, 0)
	call(t, a, func(r *rec) {
		if err := s.Send(make([]byte, 101)); !errors.Is(err, node.ErrTooLarge) {
			t.Errorf("Send over MaxMessage: %v", err)
		}
		if err := s.Send(make([]byte, 100)); err != nil {
			t.Errorf("Send of MaxMessage: %v", err)
		}
	})
	waitFor(t, func() bool { return b.r().count("msg") == 1 }, "the MaxMessage message")
}

func TestHandshakeFuzzSeeds(t *testing.T) {
	for _, b := range [][]byte{nil, {streamMagic}, make([]byte, helloLen), make([]byte, ackLen)} {
		if _, _, _, err := decodeHello(b); err == nil {
			t.Errorf("decodeHello(%x) accepted", b)
		}
		if _, err := decodeAck(b); err == nil {
			t.Errorf("decodeAck(%x) accepted", b)
		}
	}
}

// TestInboxBytesBound: a stalled node holds at most InboxBytes of stream
// payload in its inbox, however many messages are in flight; the rest
// waits in TCP. A message larger than the bound still passes alone.
func TestInboxBytesBound(t *testing.T) {
	const bound = 256 << 10
	a := startNode(t, 1, 1, nil, nil)
	b := startNode(t, 2, 1, func(c *Config) { c.InboxBytes = bound }, nil)
	introduce(t, a, b)
	s, _ := dial(t, a, b, 0)
	release := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	if err := b.Do(func(node.Handler) { <-release }); err != nil {
		t.Fatal(err)
	}
	const n, size = 40, 64 << 10
	call(t, a, func(r *rec) {
		for i := range n {
			m := make([]byte, size)
			m[0] = byte(i)
			if err := s.Send(m); err != nil {
				t.Fatalf("Send %d: %v", i, err)
			}
		}
		if err := s.Send(make([]byte, 1<<20)); err != nil {
			t.Fatalf("Send of 1 MiB: %v", err)
		}
	})
	waitFor(t, func() bool { return b.Stats().InboxBytes == bound }, "the inbox to fill to its byte bound (%+v)", b.Stats())
	time.Sleep(50 * time.Millisecond)
	if st := b.Stats(); st.InboxBytes > bound || st.Inbox > bound/size {
		t.Errorf("stalled inbox holds %d events, %d bytes; bound %d bytes", st.Inbox, st.InboxBytes, bound)
	}
	close(release)
	waitFor(t, func() bool { return b.r().count("msg") == n+1 }, "all messages")
	for i, g := range b.r().find("msg")[:n] {
		if len(g.data) != size || g.data[0] != byte(i) {
			t.Fatalf("message %d: %d bytes starting %d", i, len(g.data), g.data[0])
		}
	}
	if st := b.Stats(); st.InboxBytes != 0 {
		t.Errorf("%d bytes still counted after the inbox drained", st.InboxBytes)
	}
}

// TestDiallerChecksWhoAnswers: an address that answers the handshake as
// another node is refused with ErrBadPeer (a misconfigured peer map).
func TestDiallerChecksWhoAnswers(t *testing.T) {
	l, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		hello := make([]byte, helloLen)
		if _, err := io.ReadFull(c, hello); err != nil {
			return
		}
		ack := []byte{streamMagic, streamVersion, 0, 0, 0, 0}
		wireID(ack[2:], 9) // not the node that was dialled
		c.Write(ack)
		io.Copy(io.Discard, c)
	}()
	a := startNode(t, 1, 1, nil, nil)
	if err := a.SetPeers(map[node.ID][]netip.AddrPort{2: {l.addr}}); err != nil {
		t.Fatal(err)
	}
	call(t, a, func(r *rec) {
		if _, err := r.env.Net().Dial(2, 0); err != nil {
			t.Fatal(err)
		}
	})
	waitFor(t, func() bool { return a.r().count("closed") == 1 }, "the dial to fail")
	if err := a.r().find("closed")[0].err; !errors.Is(err, node.ErrBadPeer) {
		t.Errorf("StreamClosed(%v), want ErrBadPeer", err)
	}
	if a.r().count("open") != 0 {
		t.Error("a stream to an impostor was reported open")
	}
	a.closeNode(t)
	<-done
}

// readBody must give the same bytes whichever way they come: partly from
// the reader's buffer and the rest from the socket (a large message), or
// all through the buffer (a small one), leaving what follows for the
// next read.
func TestReadBodyDirectAndBuffered(t *testing.T) {
	for _, size := range []int{0, 1, directRead - 1, directRead, readBuffer, 3*readBuffer + 7} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			body := make([]byte, size)
			for i := range body {
				body[i] = byte(i*13 + 5)
			}
			// Each piece on its own (the buffer holds only the header)
			// or all in one (the buffer fills with the body's start).
			for _, src := range []io.Reader{
				io.MultiReader(bytes.NewReader([]byte("hdr!")), bytes.NewReader(body), bytes.NewReader([]byte("next"))),
				bytes.NewReader(append(append([]byte("hdr!"), body...), "next"...)),
			} {
				br := bufioReader(src)
				var hdr [4]byte
				if _, err := io.ReadFull(br, hdr[:]); err != nil {
					t.Fatal(err)
				}
				msg := make([]byte, size)
				if err := readBody(br, src, msg); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(msg, body) {
					t.Fatal("body read wrong")
				}
				rest, err := io.ReadAll(io.MultiReader(br, src))
				if err != nil || string(rest) != "next" {
					t.Fatalf("what follows the body: %q, %v", rest, err)
				}
			}
		})
	}
}

// readBody on a connection that ends mid-body reports it.
func TestReadBodyShort(t *testing.T) {
	src := bytes.NewReader(make([]byte, directRead))
	br := bufioReader(src)
	if err := readBody(br, src, make([]byte, 2*directRead)); err == nil {
		t.Fatal("a short body was accepted")
	}
}

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, readBuffer) }
