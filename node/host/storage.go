package host

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// The store keeps one file per key in StateDir/store, so that a Sync
// costs what it writes and not the size of the whole store. A key's file
// is named "k" + hex(key), readable by an operator with xxd, or "h" +
// hex(sha256(key)) for keys too long for a file name; the file holds the
// key itself too, so the name is only ever computed, never decoded.
//
// Sync must be atomic across keys, as it is in the simulator (where a
// crash cannot interrupt it): protocol code writes related keys together
// (a term and a vote) and must never find one without the other. A Sync
// of several keys therefore first writes them all to a journal, makes it
// durable, then applies it to the key files and removes it. Opening the
// store replays a journal left by a crash.
const (
	journalFile = "journal"
	maxPlainKey = 100 // longest key named by its hex; 201 bytes < NAME_MAX
)

// File formats. Both end with a CRC-32C of everything before it, so a
// file damaged after it was written is reported rather than believed.
//
//	record:  "CIKV" version:1 keylen:u32 key vallen:u32 val crc:u32
//	journal: "CIJN" version:1 count:u32 {op:1 keylen:u32 key [vallen:u32 val]}... crc:u32
//
// op is opPut or opDelete; a delete carries no value.
const (
	recordMagic  = "CIKV"
	journalMagic = "CIJN"
	fileVersion  = 1
	opPut        = 0
	opDelete     = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// store is a node.Storage backed by a directory. Writes stay in memory
// (pending) until Sync; durable mirrors what the files say, so reads never
// touch the disk.
type store struct {
	dir string

	mu      sync.Mutex
	durable map[string][]byte
	pending map[string][]byte // nil value: deleted
	// journalOnDisk is set while a journal may be left from a Sync that
	// failed half way; the next Sync must then write a journal even for
	// one key, to replace it, or a crash would replay the stale one.
	journalOnDisk bool
	closed        bool
}

// fileName is the name of key's file in the store directory.
func fileName(key string) string {
	if len(key) <= maxPlainKey {
		return "k" + hex.EncodeToString([]byte(key))
	}
	sum := sha256.Sum256([]byte(key))
	return "h" + hex.EncodeToString(sum[:])
}

// openStore opens (creating if needed) the store in dir: it removes
// temporary files a crash left, replays a journal if there is one, and
// loads every key.
func openStore(dir string) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("host: storage: %w", err)
	}
	// The directory entry of dir itself must survive a crash too.
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return nil, fmt.Errorf("host: storage: %w", err)
	}
	s := &store{dir: dir, durable: map[string][]byte{}, pending: map[string][]byte{}}
	if err := s.recover(); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("host: storage: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if name[0] != 'k' && name[0] != 'h' || !e.Type().IsRegular() {
			return nil, fmt.Errorf("host: storage: unexpected entry %q in %s", name, dir)
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("host: storage: %w", err)
		}
		key, val, err := decodeRecord(b)
		if err != nil {
			return nil, fmt.Errorf("host: storage: %s: %w", name, err)
		}
		if fileName(key) != name {
			return nil, fmt.Errorf("host: storage: %s holds key %q, which belongs in %s", name, key, fileName(key))
		}
		s.durable[key] = val
	}
	return s, nil
}

// recover removes what an interrupted write left and finishes an
// interrupted Sync.
func (s *store) recover() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("host: storage: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := os.Remove(filepath.Join(s.dir, e.Name())); err != nil {
				return fmt.Errorf("host: storage: %w", err)
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(s.dir, journalFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("host: storage: %w", err)
	}
	batch, err := decodeJournal(b)
	if err != nil {
		// The journal was renamed into place only once complete and
		// synced, so damage here is not a torn write: refuse to guess.
		return fmt.Errorf("host: storage: %s: %w", journalFile, err)
	}
	if err := s.apply(batch); err != nil {
		return err
	}
	return s.dropJournal()
}

func (s *store) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// Get implements node.Storage.
func (s *store) Get(key string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false, ErrClosed
	}
	v, ok := s.pending[key]
	if !ok {
		v, ok = s.durable[key]
	}
	if !ok || v == nil {
		return nil, false, nil
	}
	return slices.Clone(v), true, nil
}

// Put implements node.Storage.
func (s *store) Put(key string, val []byte) error {
	if uint64(len(key)) > math.MaxUint32 || uint64(len(val)) > math.MaxUint32 {
		return fmt.Errorf("host: storage: key or value of key %.20q too large", key)
	}
	v := make([]byte, len(val))
	copy(v, val)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.pending[key] = v
	return nil
}

// Delete implements node.Storage.
func (s *store) Delete(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.pending[key] = nil
	return nil
}

// Keys implements node.Storage.
func (s *store) Keys() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	keys := make([]string, 0, len(s.durable)+len(s.pending))
	for k := range s.durable {
		if v, ok := s.pending[k]; ok && v == nil {
			continue
		}
		keys = append(keys, k)
	}
	for k, v := range s.pending {
		if _, ok := s.durable[k]; !ok && v != nil {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys, nil
}

// Sync implements node.Storage. On error the pending writes stay pending
// (a later Sync retries them); some may already be durable.
func (s *store) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if len(s.pending) == 0 {
		return nil
	}
	batch := s.pending
	// One key needs no journal: its rename is atomic on its own.
	journal := len(batch) > 1 || s.journalOnDisk
	if journal {
		s.journalOnDisk = true
		if err := writeFileDurable(s.dir, journalFile, encodeJournal(batch)); err != nil {
			return fmt.Errorf("host: storage: journal: %w", err)
		}
		if err := syncDir(s.dir); err != nil {
			return fmt.Errorf("host: storage: journal: %w", err)
		}
	}
	if err := s.apply(batch); err != nil {
		return err
	}
	if journal {
		if err := s.dropJournal(); err != nil {
			return err
		}
	}
	for k, v := range batch {
		if v == nil {
			delete(s.durable, k)
		} else {
			s.durable[k] = v
		}
	}
	s.pending = map[string][]byte{}
	return nil
}

// apply writes a batch to the key files and syncs the directory. It is
// idempotent, which is what lets recovery replay a journal that was
// already partly applied.
func (s *store) apply(batch map[string][]byte) error {
	for _, k := range slices.Sorted(maps.Keys(batch)) {
		v := batch[k]
		name := fileName(k)
		var err error
		if v == nil {
			err = os.Remove(filepath.Join(s.dir, name))
			if errors.Is(err, fs.ErrNotExist) {
				err = nil
			}
		} else {
			err = writeFileDurable(s.dir, name, encodeRecord(k, v))
		}
		if err != nil {
			return fmt.Errorf("host: storage: key %.40q: %w", k, err)
		}
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("host: storage: %w", err)
	}
	return nil
}

// dropJournal removes the journal durably: were the removal lost, a
// later recovery would replay old values over newer ones.
func (s *store) dropJournal() error {
	err := os.Remove(filepath.Join(s.dir, journalFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("host: storage: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("host: storage: %w", err)
	}
	s.journalOnDisk = false
	return nil
}

func encodeRecord(key string, val []byte) []byte {
	b := make([]byte, 0, len(recordMagic)+1+4+len(key)+4+len(val)+4)
	b = append(b, recordMagic...)
	b = append(b, fileVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(len(key)))
	b = append(b, key...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(val)))
	b = append(b, val...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// errCorrupt is wrapped by every decoding failure of a store file.
var errCorrupt = errors.New("host: storage: corrupt file")

// reader decodes a checked byte slice, remembering the first error so
// that decoders read straight through and check once at the end.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: truncated", errCorrupt)
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u32() uint32 {
	b := r.take(4)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

func (r *reader) u8() byte {
	b := r.take(1)
	if b == nil {
		return 0
	}
	return b[0]
}

// open checks magic, version and checksum and returns a reader over the
// body.
func openFile(b []byte, magic string) *reader {
	if len(b) < len(magic)+1+4 || string(b[:len(magic)]) != magic {
		return &reader{err: fmt.Errorf("%w: bad magic", errCorrupt)}
	}
	if b[len(magic)] != fileVersion {
		return &reader{err: fmt.Errorf("%w: unknown version %d", errCorrupt, b[len(magic)])}
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return &reader{err: fmt.Errorf("%w: checksum mismatch", errCorrupt)}
	}
	return &reader{b: body[len(magic)+1:]}
}

func decodeRecord(b []byte) (key string, val []byte, err error) {
	r := openFile(b, recordMagic)
	key = string(r.take(uint64(r.u32())))
	val = slices.Clone(r.take(uint64(r.u32())))
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(r.b))
	}
	if r.err != nil {
		return "", nil, r.err
	}
	if val == nil {
		val = []byte{}
	}
	return key, val, nil
}

func encodeJournal(batch map[string][]byte) []byte {
	b := append([]byte(journalMagic), fileVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(len(batch)))
	for _, k := range slices.Sorted(maps.Keys(batch)) {
		v := batch[k]
		op := byte(opPut)
		if v == nil {
			op = opDelete
		}
		b = append(b, op)
		b = binary.BigEndian.AppendUint32(b, uint32(len(k)))
		b = append(b, k...)
		if op == opPut {
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			b = append(b, v...)
		}
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeJournal(b []byte) (map[string][]byte, error) {
	r := openFile(b, journalMagic)
	n := r.u32()
	batch := map[string][]byte{}
	for i := uint32(0); i < n && r.err == nil; i++ {
		op := r.u8()
		key := string(r.take(uint64(r.u32())))
		switch op {
		case opPut:
			v := r.take(uint64(r.u32()))
			batch[key] = append([]byte{}, v...)
		case opDelete:
			batch[key] = nil
		default:
			if r.err == nil {
				r.err = fmt.Errorf("%w: unknown op %d", errCorrupt, op)
			}
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(r.b))
	}
	if r.err != nil {
		return nil, r.err
	}
	return batch, nil
}
