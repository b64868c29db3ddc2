package host

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/clusterinfra/ci/node"
)

func TestDatagramRoundTrip(t *testing.T) {
	a := startNode(t, 1, 2, nil, nil)
	b := startNode(t, 2, 2, nil, nil)
	introduce(t, a, b)
	call(t, a, func(r *rec) {
		if got := r.env.Net().Paths(2); got != 2 {
			t.Errorf("Paths(2) = %d, want 2", got)
		}
		if got := r.env.Net().Paths(9); got != 0 {
			t.Errorf("Paths(unknown) = %d, want 0", got)
		}
		for path, p := range []string{"over path 0", "over path 1"} {
			if err := r.env.Net().SendDatagram(2, path, []byte(p)); err != nil {
				t.Errorf("SendDatagram path %d: %v", path, err)
			}
		}
		big := bytes.Repeat([]byte{0xAB}, node.MaxDatagram)
		if err := r.env.Net().SendDatagram(2, 0, big); err != nil {
			t.Errorf("SendDatagram of MaxDatagram bytes: %v", err)
		}
	})
	waitFor(t, func() bool { return b.r().count("dgram") == 3 }, "3 datagrams at n2")
	got := map[int][]string{}
	for _, g := range b.r().find("dgram") {
		if g.from != 1 {
			t.Errorf("datagram from %v, want n1", g.from)
		}
		if len(g.data) == node.MaxDatagram {
			got[g.path] = append(got[g.path], "big")
			if !bytes.Equal(g.data, bytes.Repeat([]byte{0xAB}, node.MaxDatagram)) {
				t.Error("MaxDatagram payload damaged")
			}
			continue
		}
		got[g.path] = append(got[g.path], string(g.data))
	}
	// Loopback does not reorder within one socket pair.
	want := map[int][]string{0: {"over path 0", "big"}, 1: {"over path 1"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("datagrams by path (-want +got):\n%s", diff)
	}
	if st := a.Stats(); st.DatagramsSent != 3 {
		t.Errorf("sender counted %d datagrams, want 3", st.DatagramsSent)
	}
	if st := b.Stats(); st.DatagramsReceived != 3 || st.DatagramsRejected != 0 {
		t.Errorf("receiver stats %+v", st)
	}
}

func TestDatagramMisuse(t *testing.T) {
	a := startNode(t, 1, 1, nil, nil)
	b := startNode(t, 2, 1, nil, nil)
	introduce(t, a, b)
	call(t, a, func(r *rec) {
		nw := r.env.Net()
		tests := []struct {
			name    string
			peer    node.ID
			path    int
			size    int
			wantErr error
		}{
			{"too large", 2, 0, node.MaxDatagram + 1, node.ErrTooLarge},
			{"unknown peer", 7, 0, 1, node.ErrBadPeer},
			{"path out of range", 2, 1, 1, node.ErrBadPeer},
			{"negative path", 2, -1, 1, node.ErrBadPeer},
		}
		for _, tt := range tests {
			err := nw.SendDatagram(tt.peer, tt.path, make([]byte, tt.size))
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("%s: %v, want %v", tt.name, err, tt.wantErr)
			}
			if err != nil && err.Error()[:6] != "host: " {
				t.Errorf("%s: error %q lacks the host: prefix", tt.name, err)
			}
		}
		for _, d := range []struct {
			peer node.ID
			path int
		}{{7, 0}, {2, 1}, {1, 0}} {
			if _, err := nw.Dial(d.peer, d.path); !errors.Is(err, node.ErrBadPeer) {
				t.Errorf("Dial(%v, %d): %v, want ErrBadPeer", d.peer, d.path, err)
			}
		}
	})
	time.Sleep(20 * time.Millisecond)
	if n := b.r().count("dgram"); n != 0 {
		t.Errorf("%d datagrams delivered after misuse", n)
	}
}

// TestDatagramToSelf: Self may be in Peers; a datagram to itself loops
// back, as in the simulator.
func TestDatagramToSelf(t *testing.T) {
	a := startNode(t, 1, 1, nil, nil)
	introduce(t, a)
	call(t, a, func(r *rec) {
		if err := r.env.Net().SendDatagram(1, 0, []byte("me")); err != nil {
			t.Error(err)
		}
	})
	waitFor(t, func() bool { return a.r().count("dgram") == 1 }, "datagram to self")
}

func TestDatagramRejectsStrangers(t *testing.T) {
	b := startNode(t, 2, 2, nil, nil)
	raw, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	rawAddr := raw.LocalAddr().(*net.UDPAddr).AddrPort()
	// n1 is a peer on path 0 only.
	if err := b.SetPeers(map[node.ID][]netip.AddrPort{1: {rawAddr}}); err != nil {
		t.Fatal(err)
	}
	bad := [][]byte{
		{1, 2, 3}, // shorter than a header
		encodeDatagram(1, 2, 0, []byte("x"))[:dgramHeader-1],               // truncated header
		append([]byte{0x00}, encodeDatagram(1, 2, 0, nil)[1:]...),          // bad magic
		append([]byte{dgramMagic, 9}, encodeDatagram(1, 2, 0, nil)[2:]...), // bad version
		encodeDatagram(77, 2, 0, []byte("stranger")),                       // unknown node
		encodeDatagram(1, 3, 0, []byte("misdirected")),                     // meant for n3
		encodeDatagram(1, 2, 1, []byte("wrong path")),                      // header says path 1, sent to path 0
		encodeDatagram(0, 2, 0, []byte("node zero")),                       // invalid node number
	}
	to := b.Addrs()
	for _, p := range bad {
		if _, err := raw.WriteToUDPAddrPort(p, to[0]); err != nil {
			t.Fatal(err)
		}
	}
	// From n1 on path 1, where n1 has no address: rejected too.
	if _, err := raw.WriteToUDPAddrPort(encodeDatagram(1, 2, 1, []byte("no such path")), to[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.WriteToUDPAddrPort(encodeDatagram(1, 2, 0, []byte("good")), to[0]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return b.r().count("dgram") == 1 }, "the good datagram")
	waitFor(t, func() bool { return b.Stats().DatagramsRejected == uint64(len(bad)+1) }, "%d rejections (have %d)", len(bad)+1, b.Stats().DatagramsRejected)
	g := b.r().find("dgram")[0]
	if g.from != 1 || g.path != 0 || string(g.data) != "good" {
		t.Errorf("delivered %+v", g)
	}
}

// TestDatagramsDroppedWhenInboxFull: a node whose loop is busy drops
// datagrams beyond its inbox and counts them, instead of blocking.
func TestDatagramsDroppedWhenInboxFull(t *testing.T) {
	a := startNode(t, 1, 1, nil, nil)
	b := startNode(t, 2, 1, func(c *Config) { c.Inbox = 8 }, nil)
	introduce(t, a, b)
	release := make(chan struct{})
	blocked := make(chan struct{})
	if err := b.Do(func(node.Handler) { close(blocked); <-release }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	<-blocked
	const sent = 100
	call(t, a, func(r *rec) {
		for i := range sent {
			_ = r.env.Net().SendDatagram(2, 0, []byte{byte(i)})
		}
	})
	waitFor(t, func() bool { st := b.Stats(); return st.DatagramsReceived+st.DatagramsDropped == sent },
		"all %d datagrams received or dropped (%+v)", sent, b.Stats())
	close(release)
	st := b.Stats()
	if st.DatagramsReceived != 8 || st.DatagramsDropped != sent-8 {
		t.Errorf("received %d, dropped %d; want 8 and %d", st.DatagramsReceived, st.DatagramsDropped, sent-8)
	}
	waitFor(t, func() bool { return b.r().count("dgram") == 8 }, "the queued datagrams delivered")
}

func FuzzDecodeDatagram(f *testing.F) {
	f.Add(encodeDatagram(1, 2, 0, []byte("hello")))
	f.Add([]byte{dgramMagic, dgramVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		from, to, path, payload, err := decodeDatagram(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeDatagram(from, to, path, payload), b) {
			t.Fatalf("re-encoding %x differs", b)
		}
	})
}
