package host

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/clusterinfra/ci/node"
)

// Every datagram starts with a header that says who sent it, to whom and
// over which path, because a UDP source address says none of that
// reliably (NAT, multi-homed hosts, port 0 at startup):
//
//	magic:1 version:1 from:u32 to:u32 path:1 payload...
const (
	dgramMagic   = 0xD6
	dgramVersion = 1
	dgramHeader  = 11
	// maxUDP is the largest UDP payload, which the read buffer must hold
	// so that an oversized datagram is seen whole and rejected.
	maxUDP = 65535
)

// encodeDatagram frames payload for the wire.
func encodeDatagram(from, to node.ID, path int, payload []byte) []byte {
	b := make([]byte, dgramHeader+len(payload))
	b[0], b[1] = dgramMagic, dgramVersion
	wireID(b[2:], from)
	wireID(b[6:], to)
	b[10] = byte(path)
	copy(b[dgramHeader:], payload)
	return b
}

// decodeDatagram checks a received datagram's header. The payload
// aliases b.
func decodeDatagram(b []byte) (from, to node.ID, path int, payload []byte, err error) {
	switch {
	case len(b) < dgramHeader:
		return 0, 0, 0, nil, fmt.Errorf("host: datagram of %d bytes is shorter than its header", len(b))
	case b[0] != dgramMagic:
		return 0, 0, 0, nil, fmt.Errorf("host: datagram with bad magic %#x", b[0])
	case b[1] != dgramVersion:
		return 0, 0, 0, nil, fmt.Errorf("host: datagram of unknown version %d", b[1])
	case len(b)-dgramHeader > node.MaxDatagram:
		return 0, 0, 0, nil, fmt.Errorf("host: datagram payload of %d bytes exceeds %d", len(b)-dgramHeader, node.MaxDatagram)
	}
	from = node.ID(binary.BigEndian.Uint32(b[2:]))
	to = node.ID(binary.BigEndian.Uint32(b[6:]))
	return from, to, int(b[10]), b[dgramHeader:], nil
}

// SendDatagram implements node.Network. A failed send is a network fault,
// counted but never reported: the contract lets datagrams vanish.
func (e *env) SendDatagram(peer node.ID, path int, payload []byte) error {
	n := e.n
	addr, ok := n.peerAddr(peer, path)
	if !ok {
		return fmt.Errorf("host: %w: %v path %d", node.ErrBadPeer, peer, path)
	}
	if len(payload) > node.MaxDatagram {
		return fmt.Errorf("host: %w: datagram of %d bytes (max %d)", node.ErrTooLarge, len(payload), node.MaxDatagram)
	}
	if n.closing.Load() {
		return fmt.Errorf("host: %w: node closed", node.ErrUnreachable)
	}
	b := encodeDatagram(n.cfg.Self, peer, path, payload)
	if _, err := n.udp[path].WriteToUDPAddrPort(b, addr); err != nil {
		n.stats.dgramSendErr.Add(1)
		n.log.Debug("host: datagram send failed", "peer", peer.String(), "path", path, "err", err)
		return nil
	}
	n.stats.dgramSent.Add(1)
	return nil
}

// readDatagrams receives path i's datagrams until Close. It never waits
// for the loop: when the inbox is full the datagram is dropped, as a
// socket buffer would drop it, so that a datagram flood cannot hold up
// anything else.
func (n *Node) readDatagrams(i int) {
	buf := make([]byte, maxUDP)
	for {
		nr, src, err := n.udp[i].ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || n.closing.Load() {
				return
			}
			// A transient error (ICMP feedback, a full buffer): pause
			// briefly so that a persistent one cannot spin the CPU.
			n.log.Debug("host: datagram receive failed", "path", i, "err", err)
			select {
			case <-n.quit:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		from, to, path, payload, err := decodeDatagram(buf[:nr])
		if err == nil && (to != n.cfg.Self || path != i) {
			err = fmt.Errorf("host: datagram for %v path %d arrived at %v path %d", to, path, n.cfg.Self, i)
		}
		if err == nil {
			if _, ok := n.peerAddr(from, i); !ok {
				err = fmt.Errorf("host: datagram from %v, which is not a peer on path %d", from, i)
			}
		}
		if err != nil {
			n.stats.dgramRejected.Add(1)
			n.log.Debug("host: datagram rejected", "src", src, "err", err)
			continue
		}
		if !n.inboxBytes.tryAcquire(len(payload)) {
			n.stats.dgramDropped.Add(1)
			continue
		}
		ev := event{kind: evDatagram, peer: from, path: i, data: append([]byte(nil), payload...)}
		n.pending.Add(1) // before the send: the loop may dispatch it at once
		select {
		case n.inbox <- ev:
			n.stats.dgramReceived.Add(1)
		default:
			n.pending.Add(-1)
			n.inboxBytes.release(len(payload))
			n.stats.dgramDropped.Add(1)
		}
	}
}
