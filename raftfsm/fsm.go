package raftfsm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/ringkv/ringkv/storage"
)

// Entry is one committed Raft log entry.
type Entry struct {
	Index uint64
	// Data is a batch from EncodeBatch. Empty data marks an entry with no
	// command (a configuration change, a no-op): it only advances the
	// applied index.
	Data []byte
}

// Config configures one partition's FSM.
type Config struct {
	// Partition selects the key prefix this FSM owns in DB.
	Partition uint32
	// DB is the node's Pebble; the caller opens and closes it.
	DB *pebble.DB
	// Logger receives undecodable entries, restores and failures.
	Logger *slog.Logger
	// WriteBack, when above 0, lets applied writes wait in memory (where
	// Get, Snapshot and later commands see them) until they hold this many
	// bytes or Flush, Snapshot, Restore or Close runs, and then writes them
	// to Pebble in one batch with the dedup records and the applied index.
	// At 0 every ApplyBatch writes its own batch. See pending.go.
	WriteBack int
	// OnPending, if set, is called when applied writes start waiting in
	// memory (WriteBack above 0), so the caller can schedule a Flush. It
	// runs with the FSM's lock held: it must not call the FSM.
	OnPending func()
}

// MaxWriteBack bounds Config.WriteBack: what waits in memory is per
// partition, and a node hosts hundreds.
const MaxWriteBack = 16 << 20

// DefaultConfig returns a Config that discards logs and writes every batch
// through (WriteBack 0); set Partition and DB.
func DefaultConfig() Config {
	return Config{Logger: slog.New(slog.DiscardHandler)}
}

// Validate reports what is missing from c. It has no side effects.
func (c Config) Validate() error {
	var errs []error
	if c.DB == nil {
		errs = append(errs, errors.New("raftfsm: Config.DB is nil; open the node's Pebble first"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("raftfsm: Config.Logger is nil; start from DefaultConfig()"))
	}
	if c.WriteBack < 0 || c.WriteBack > MaxWriteBack {
		errs = append(errs, fmt.Errorf("raftfsm: Config.WriteBack %d bytes outside 0..%d", c.WriteBack, MaxWriteBack))
	}
	return errors.Join(errs...)
}

// restoreBatchBytes is the size at which Restore commits a batch, so a
// snapshot of any size is written in bounded memory.
const restoreBatchBytes = 4 << 20

// FSM is the state machine of one partition. ApplyBatch, Restore and
// Snapshot are serialized internally (the Raft library calls them from one
// goroutine anyway); AppliedIndex, WaitApplied and Get may be called from
// any goroutine at any time.
type FSM struct {
	db        *pebble.DB
	log       *slog.Logger
	partition uint32
	prefix    []byte // every key this FSM owns starts with it
	end       []byte // storage.PrefixEnd(prefix)
	appliedK  []byte

	applied atomic.Uint64

	// mu serializes state changes and guards the fields below it.
	mu     sync.Mutex
	keyBuf []byte // scratch for storage keys
	valBuf []byte // scratch for encoded dedup records
	// sessions caches the committed dedup records of recent clients, so
	// most commands skip reading and decoding theirs (it was 4% of the CPU
	// of a put). Pebble stays the source of truth: the cache is emptied on
	// any apply or commit failure and by Restore.
	sessions    map[uint64]*session
	used        map[uint64]*session // the applier's records of one batch, reused (emptied after each)
	restoreSize int                 // restoreBatchBytes; tests lower it

	// Applied state that waits in memory (Config.WriteBack; pending.go).
	// pending is written under mu and pendMu, so Get reads it under pendMu
	// alone and apply code holding mu reads it without pendMu.
	pendMu    sync.RWMutex
	pending   map[string]pendingValue // user key -> its newest write
	pendBytes int
	pendSess  map[uint64]*session // changed dedup records not yet written
	persisted uint64              // the applied index Pebble holds
	scheduled bool                // OnPending was called since the last flush
	writeBack int
	onPending func()
	shut      bool // Close ran: Flush does nothing

	// stateMu guards notify and fault. fault is written with both mu and
	// stateMu held, so apply code holding mu may read it directly.
	stateMu sync.Mutex
	notify  chan struct{} // closed and cleared by the next apply; nil if nobody waits
	fault   error         // non-nil: stopped applying; wraps ErrFailed

	closed    chan struct{}
	closeOnce sync.Once
}

// New returns the FSM of cfg.Partition, resuming from the applied index
// stored in cfg.DB (0 for a new partition).
func New(cfg Config) (*FSM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	prefix := storage.FSMPrefix(cfg.Partition)
	f := &FSM{
		db:          cfg.DB,
		log:         cfg.Logger.With("partition", cfg.Partition),
		partition:   cfg.Partition,
		prefix:      prefix,
		end:         storage.PrefixEnd(prefix),
		appliedK:    appliedKey(prefix),
		restoreSize: restoreBatchBytes,
		pending:     make(map[string]pendingValue),
		pendSess:    make(map[uint64]*session),
		writeBack:   cfg.WriteBack,
		onPending:   cfg.OnPending,
		closed:      make(chan struct{}),
	}
	idx, err := readApplied(cfg.DB, f.appliedK)
	if err != nil {
		return nil, err
	}
	f.applied.Store(idx)
	f.persisted = idx
	return f, nil
}

// getter is what readApplied needs: a *pebble.DB or a *pebble.Snapshot.
type getter interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

func readApplied(r getter, key []byte) (uint64, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("raftfsm: read applied index: %w", err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("raftfsm: stored applied index has %d bytes, want 8", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// AppliedIndex returns the index of the last applied entry.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// Apply applies one entry; see ApplyBatch.
func (f *FSM) Apply(index uint64, data []byte) []Result {
	return f.ApplyBatch([]Entry{{Index: index, Data: data}})[0]
}

// ApplyBatch applies committed entries in order. Their writes, the dedup
// records and the new applied index reach Pebble together in one batch,
// committed without fsync, either now (Config.WriteBack 0) or with later
// batches' (see pending.go): if that batch is lost in a crash, so is its
// applied index, and the synced Raft log replays the entries.
//
// results[i] holds one Result per command of entries[i]; it is nil for an
// entry without data and for an entry whose index is not above the applied
// index (a replay after restart). An undecodable entry gets a single
// StatusInvalid result and still advances the applied index.
//
// If Pebble fails (or a stored record is corrupt), the FSM stops applying
// instead of diverging from its peers: these and all later entries get
// StatusInvalid results, the FSM drops what waited in memory and goes back
// to the state and applied index Pebble holds, and WaitApplied returns an
// error wrapping ErrFailed until a Restore succeeds.
func (f *FSM) ApplyBatch(entries []Entry) [][]Result {
	results := make([][]Result, len(entries))
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fault != nil {
		f.refuse(entries, results)
		return results
	}
	a := applier{f: f, sessions: f.used}
	defer f.reuseApplier(&a)
	start := f.applied.Load()
	last := start
	for i, e := range entries {
		if e.Index <= last {
			continue
		}
		last = e.Index
		if len(e.Data) == 0 {
			continue
		}
		cmds, err := DecodeBatch(e.Data)
		if err != nil {
			f.log.Warn("raftfsm: undecodable entry", "index", e.Index, "err", err)
			results[i] = []Result{{Status: StatusInvalid, Err: err.Error()}}
			continue
		}
		rs := make([]Result, len(cmds))
		for j := range cmds {
			rs[j] = a.apply(e.Index, &cmds[j])
		}
		results[i] = rs
		if a.err != nil {
			break
		}
	}
	if last == start {
		return results
	}
	if a.err != nil {
		f.dropPending() // it holds part of this batch
		f.setFault(a.err)
		f.refuse(entries, results)
		return results
	}
	for id, s := range a.sessions {
		if s.dirty {
			f.pendSess[id] = s
		}
	}
	f.cacheSessions(a.sessions)
	f.applied.Store(last)
	if f.writeBack == 0 || f.pendBytes >= f.writeBack {
		if err := f.flushLocked(); err != nil {
			f.refuse(entries, results)
			return results
		}
	} else if !f.scheduled && f.onPending != nil {
		f.scheduled = true
		f.onPending()
	}
	f.wake()
	return results
}

// refuse fills results for the entries ApplyBatch would have applied with
// StatusInvalid, one per command, after the FSM failed.
func (f *FSM) refuse(entries []Entry, results [][]Result) {
	msg := f.fault.Error()
	last := f.applied.Load()
	for i, e := range entries {
		results[i] = nil
		if e.Index <= last {
			continue
		}
		last = e.Index
		if len(e.Data) == 0 {
			continue
		}
		n := 1
		if cmds, err := DecodeBatch(e.Data); err == nil {
			n = len(cmds)
		}
		results[i] = make([]Result, n)
		for j := range results[i] {
			results[i][j] = Result{Status: StatusInvalid, Err: msg}
		}
	}
}

// setFault stops the FSM. Callers hold mu.
func (f *FSM) setFault(err error) {
	f.log.Error("raftfsm: state machine stopped applying; restore this replica from a snapshot", "err", err)
	f.stateMu.Lock()
	f.fault = fmt.Errorf("%w: %v", ErrFailed, err)
	f.stateMu.Unlock()
	f.wake()
}

// wake releases every WaitApplied call to re-check its condition.
func (f *FSM) wake() {
	f.stateMu.Lock()
	if f.notify != nil {
		close(f.notify)
		f.notify = nil
	}
	f.stateMu.Unlock()
}

// WaitApplied returns nil once AppliedIndex() >= index, ctx.Err() if ctx
// ends first, ErrClosed if the FSM is closed first, or an error wrapping
// ErrFailed if the FSM stopped applying. Waiting costs no polling: every
// apply closes one shared channel.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		if f.applied.Load() >= index {
			return nil
		}
		f.stateMu.Lock()
		// Re-check under the lock: an apply that lands after this point
		// closes the channel taken below, so no wake-up is missed.
		if f.applied.Load() >= index {
			f.stateMu.Unlock()
			return nil
		}
		if f.fault != nil {
			err := f.fault
			f.stateMu.Unlock()
			return err
		}
		if f.notify == nil {
			f.notify = make(chan struct{})
		}
		ch := f.notify
		f.stateMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-f.closed:
			if f.applied.Load() >= index {
				return nil
			}
			return ErrClosed
		}
	}
}

// Get reads a key as of the last applied batch, from memory if its newest
// write still waits there, else from Pebble (eventual consistency unless
// the caller first waited for a read index). The returned value is a copy.
// It returns ErrNotFound if the key does not exist.
func (f *FSM) Get(key []byte) (value []byte, version uint64, err error) {
	f.pendMu.RLock()
	pv, ok := f.pending[string(key)]
	f.pendMu.RUnlock()
	if ok {
		if pv.deleted {
			return nil, 0, ErrNotFound
		}
		return bytes.Clone(pv.value), pv.version, nil // pv.value is never changed
	}
	v, closer, err := f.db.Get(appendDataKey(nil, f.prefix, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("raftfsm: get: %w", err)
	}
	defer closer.Close()
	if len(v) < versionLen {
		return nil, 0, fmt.Errorf("raftfsm: stored value of key %q has %d bytes, shorter than its version", key, len(v))
	}
	return bytes.Clone(v[versionLen:]), binary.BigEndian.Uint64(v), nil
}

// Close writes what waits in memory to Pebble, makes later Flush calls do
// nothing, and wakes every WaitApplied call with ErrClosed. It does not
// close the DB (the caller owns it); call it after the Raft group stopped
// applying.
func (f *FSM) Close() {
	f.closeOnce.Do(func() {
		f.mu.Lock()
		if f.fault == nil {
			if err := f.flushLocked(); err != nil {
				f.log.Error("raftfsm: writing applied state at close; the Raft log replays it", "err", err)
			}
		}
		f.shut = true
		f.mu.Unlock()
		close(f.closed)
	})
}

// applier applies the commands of one ApplyBatch call to the FSM's pending
// writes, so each command reads the effects of the earlier ones. Dedup
// records are decoded once per client and handed to the FSM at the end.
type applier struct {
	f        *FSM
	sessions map[uint64]*session
	err      error // first storage error; apply stops at the entry
}

func (a *applier) apply(index uint64, c *Command) Result {
	if a.err != nil {
		return Result{Status: StatusInvalid, Err: a.err.Error()}
	}
	if c.ClientID == 0 {
		return a.execute(index, c)
	}
	s := a.session(c.ClientID)
	if a.err != nil {
		return Result{Status: StatusInvalid, Err: a.err.Error()}
	}
	s.ack(c.AckBelow)
	if c.Seq < s.low {
		return Result{Status: StatusStaleRequest}
	}
	if r, ok := s.lookup(c.Seq); ok {
		return r
	}
	r := a.execute(index, c)
	if a.err == nil {
		s.record(c.Seq, r)
	}
	return r
}

func (a *applier) session(clientID uint64) *session {
	if s, ok := a.sessions[clientID]; ok {
		return s
	}
	f := a.f
	s, ok := f.pendSess[clientID]
	if !ok {
		s, ok = f.sessions[clientID]
	}
	if ok {
		a.keep(clientID, s)
		return s
	}
	f.keyBuf = appendSessionKey(f.keyBuf, f.prefix, clientID)
	s = &session{}
	v, closer, err := f.db.Get(f.keyBuf)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		a.err = fmt.Errorf("raftfsm: read dedup record of client %d: %w", clientID, err)
		return nil
	default:
		s, err = decodeSession(v)
		closer.Close()
		if err != nil {
			a.err = fmt.Errorf("client %d: %w", clientID, err)
			return nil
		}
	}
	a.keep(clientID, s)
	return s
}

func (a *applier) keep(clientID uint64, s *session) {
	if a.sessions == nil {
		a.sessions = make(map[uint64]*session)
	}
	a.sessions[clientID] = s
}

// maxReusedSessions bounds the applier map that ApplyBatch keeps for the
// next batch: a larger one (a replay of many clients' commands) is dropped
// rather than emptied again for every later batch.
const maxReusedSessions = 64

// reuseApplier keeps a's map, emptied, for the next ApplyBatch: under load
// every batch touches a client or two, and a new map per batch was 4% of a
// loaded node's allocations. Callers hold mu.
func (f *FSM) reuseApplier(a *applier) {
	if len(a.sessions) > maxReusedSessions {
		f.used = nil
		return
	}
	clear(a.sessions)
	f.used = a.sessions
}

// Bounds of FSM.sessions: a partition keeps at most maxCachedSessions
// records, each at most maxCachedSessionBytes of results, in memory.
const (
	maxCachedSessions     = 64
	maxCachedSessionBytes = 4 << 10
)

// cacheSessions keeps the records a batch used in f.sessions. When the
// cache is full an arbitrary entry makes room; a changed record stays in
// f.pendSess until it is written. Callers hold mu.
func (f *FSM) cacheSessions(used map[uint64]*session) {
	for id, s := range used {
		if s.size > maxCachedSessionBytes {
			delete(f.sessions, id)
			continue
		}
		if f.sessions == nil {
			f.sessions = make(map[uint64]*session)
		}
		if _, ok := f.sessions[id]; !ok && len(f.sessions) >= maxCachedSessions {
			for old := range f.sessions {
				delete(f.sessions, old)
				break
			}
		}
		f.sessions[id] = s
	}
}

// invalid returns why c cannot be applied, or "".
func invalid(c *Command) string {
	switch {
	case c.Kind < KindPut || c.Kind > KindCAS:
		return fmt.Sprintf("invalid command: unknown kind %d", c.Kind)
	case len(c.Key) == 0:
		return "invalid command: empty key"
	case c.Kind == KindCAS && (c.Expect < ExpectValue || c.Expect > ExpectAbsent):
		return fmt.Sprintf("invalid command: unknown CAS condition %d", c.Expect)
	}
	return ""
}

func (a *applier) execute(index uint64, c *Command) Result {
	if msg := invalid(c); msg != "" {
		return Result{Status: StatusInvalid, Err: msg}
	}
	f := a.f
	if c.Kind == KindPut {
		// A put does not depend on the current value: skip the read.
		f.setPending(c.Key, pendingValue{value: bytes.Clone(c.Value), version: index})
		return Result{Status: StatusOK, Version: index}
	}
	found, version, value, closer := a.read(c.Key)
	if a.err != nil {
		return Result{Status: StatusInvalid, Err: a.err.Error()}
	}
	if closer != nil {
		defer closer.Close()
	}
	switch c.Kind {
	case KindDelete:
		if !found {
			return Result{Status: StatusNotFound}
		}
		f.setPending(c.Key, pendingValue{version: index, deleted: true})
		return Result{Status: StatusOK, Version: index}
	case KindCAS:
		var ok bool
		switch c.Expect {
		case ExpectValue:
			ok = found && bytes.Equal(value, c.ExpectedValue)
		case ExpectVersion:
			ok = found && version == c.ExpectedVersion
		case ExpectAbsent:
			ok = !found
		}
		if !ok {
			return Result{Status: StatusCompareFailed, Version: version, Exists: found, Value: cloneOrNil(value)}
		}
	}
	f.setPending(c.Key, pendingValue{value: bytes.Clone(c.Value), version: index})
	return Result{Status: StatusOK, Version: index}
}

// read returns the current version and value of a user key, pending or in
// Pebble; value is valid until closer (non-nil when read from Pebble) is
// closed.
func (a *applier) read(userKey []byte) (found bool, version uint64, value []byte, closer io.Closer) {
	f := a.f
	if pv, ok := f.pending[string(userKey)]; ok {
		if pv.deleted {
			return false, 0, nil, nil
		}
		return true, pv.version, pv.value, nil
	}
	f.keyBuf = appendDataKey(f.keyBuf, f.prefix, userKey)
	v, closer, err := f.db.Get(f.keyBuf)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, 0, nil, nil
	}
	if err != nil {
		a.err = fmt.Errorf("raftfsm: read key %q: %w", userKey, err)
		return false, 0, nil, nil
	}
	if len(v) < versionLen {
		closer.Close()
		a.err = fmt.Errorf("raftfsm: stored value of key %q has %d bytes, shorter than its version", userKey, len(v))
		return false, 0, nil, nil
	}
	return true, binary.BigEndian.Uint64(v), v[versionLen:], closer
}

func cloneOrNil(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return bytes.Clone(b)
}
