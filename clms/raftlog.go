package clms

import (
	"fmt"
	"strconv"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/clusterinfra/ci/node"
)

// raftLog is the candidates' consensus log, kept in raft's MemoryStorage
// and made durable in node.Storage. Ordering duty: persist (and Sync)
// the hard state and new entries of a Ready before sending any of its
// messages, or a candidate that restarts could vote twice in one term.
type raftLog struct {
	mem *raft.MemoryStorage
	st  node.Storage
}

const (
	keyHardState = "raft/hardstate"
	keyLast      = "raft/last"
	keyEntry     = "raft/entry/"
	bootIndex    = 1 // the bootstrap snapshot's index: every candidate starts from the same one
)

func entryKey(i uint64) string { return keyEntry + fmt.Sprintf("%020d", i) }

// openRaftLog loads what a candidate persisted, or bootstraps a fresh log
// whose configuration is exactly the candidates.
func openRaftLog(st node.Storage, voters []node.ID) (*raftLog, error) {
	l := &raftLog{mem: raft.NewMemoryStorage(), st: st}
	cs := &pb.ConfState{}
	for _, v := range voters {
		cs.Voters = append(cs.Voters, uint64(v))
	}
	snap := &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: proto.Uint64(bootIndex), Term: proto.Uint64(1), ConfState: cs}}
	if err := l.mem.ApplySnapshot(snap); err != nil {
		return nil, fmt.Errorf("clms: bootstrap log: %w", err)
	}
	hsb, ok, err := st.Get(keyHardState)
	if err != nil {
		return nil, err
	}
	if ok {
		hs := &pb.HardState{}
		if err := proto.Unmarshal(hsb, hs); err != nil {
			return nil, fmt.Errorf("clms: stored hard state: %w", err)
		}
		if err := l.mem.SetHardState(hs); err != nil {
			return nil, err
		}
	}
	lastb, ok, err := st.Get(keyLast)
	if err != nil {
		return nil, err
	}
	if ok {
		last, err := strconv.ParseUint(string(lastb), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("clms: stored last index: %w", err)
		}
		var ents []*pb.Entry
		for i := uint64(bootIndex + 1); i <= last; i++ {
			b, ok, err := st.Get(entryKey(i))
			if err != nil || !ok {
				return nil, fmt.Errorf("clms: stored entry %d missing (%v)", i, err)
			}
			e := &pb.Entry{}
			if err := proto.Unmarshal(b, e); err != nil {
				return nil, fmt.Errorf("clms: stored entry %d: %w", i, err)
			}
			ents = append(ents, e)
		}
		if err := l.mem.Append(ents); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// save persists a Ready's hard state and entries, and syncs.
func (l *raftLog) save(rd *raft.Ready) error {
	if len(rd.Entries) > 0 {
		if err := l.mem.Append(rd.Entries); err != nil {
			return err
		}
		for _, e := range rd.Entries {
			b, err := proto.Marshal(e)
			if err != nil {
				return err
			}
			if err := l.st.Put(entryKey(e.GetIndex()), b); err != nil {
				return err
			}
		}
		// Entries past the new last one were overwritten by a new leader:
		// the last index bounds what a restart reads back.
		last := rd.Entries[len(rd.Entries)-1].GetIndex()
		if err := l.st.Put(keyLast, []byte(strconv.FormatUint(last, 10))); err != nil {
			return err
		}
	}
	if rd.HardState != nil && !raft.IsEmptyHardState(rd.HardState) {
		if err := l.mem.SetHardState(rd.HardState); err != nil {
			return err
		}
		b, err := proto.Marshal(rd.HardState)
		if err != nil {
			return err
		}
		if err := l.st.Put(keyHardState, b); err != nil {
			return err
		}
	}
	if len(rd.Entries) > 0 || (rd.HardState != nil && !raft.IsEmptyHardState(rd.HardState)) {
		return l.st.Sync()
	}
	return nil
}

// quietLogger keeps raft's chatter out of traces; only panics surface.
type quietLogger struct{}

func (quietLogger) Debug(...any)              {}
func (quietLogger) Debugf(string, ...any)     {}
func (quietLogger) Error(...any)              {}
func (quietLogger) Errorf(string, ...any)     {}
func (quietLogger) Info(...any)               {}
func (quietLogger) Infof(string, ...any)      {}
func (quietLogger) Warning(...any)            {}
func (quietLogger) Warningf(string, ...any)   {}
func (quietLogger) Fatal(v ...any)            { panic(fmt.Sprint(v...)) }
func (quietLogger) Fatalf(f string, v ...any) { panic(fmt.Sprintf(f, v...)) }
func (quietLogger) Panic(v ...any)            { panic(fmt.Sprint(v...)) }
func (quietLogger) Panicf(f string, v ...any) { panic(fmt.Sprintf(f, v...)) }
