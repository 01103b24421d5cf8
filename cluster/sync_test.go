package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/lathe-ml/lathe/trainer"
)

// TestFollowerTakesTheWorkersState: at a sync point each worker offers
// its chunk's optimizer state and one of them its snapshot; the following
// coordinator's Take returns them whole — after refusing forged, foreign
// and malformed parts without a change — and ErrShareFirst once a restart
// is planned from the state it holds.
func TestFollowerTakesTheWorkersState(t *testing.T) {
	_, conn := embedded(t)
	secret := []byte("the job's secret")
	members := []string{"a", "b"}
	const n, k = 1000, 4
	type encoded struct { // the snapshot's JSON leaves its tensors out
		Snapshot *trainer.Snapshot
		Params   [][]float32
	}
	codec := StateCodec{
		Encode: func(sn *trainer.Snapshot) ([]byte, error) { return json.Marshal(encoded{sn, sn.Params}) },
		Decode: func(b []byte) (*trainer.Snapshot, error) {
			var e encoded
			if err := json.Unmarshal(b, &e); err != nil {
				return nil, err
			}
			e.Snapshot.Params = e.Params
			return e.Snapshot, nil
		},
	}
	reps := map[string]*Replica{}
	for _, name := range append(slices.Clone(members), coordinatorName) {
		r, err := NewReplica(conn(name), secret, "job", name, 1, 2, 1, members, testLog(t, name))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if err := r.follow(k); err != nil {
			t.Fatal(err)
		}
		r.SetStateCodec(codec)
		r.n = n
		reps[name] = r
	}
	coord := reps[coordinatorName]
	if !coord.Follows() || reps["a"].Follows() || coord.SyncEvery() != k || coord.DigestEvery() != 0 {
		t.Fatal("the coordinator's replica should follow, every 4 steps, hashing at sync points only, and the workers' not")
	}

	// Forgeries: unsigned; signed but from outside the membership, for a
	// step far ahead, a range beyond the vector, another vector's length,
	// and an unknown kind.
	forger := conn("forger")
	part := func(step int64, kind string, lo, hi, vec int, data []byte) nats.Header {
		h := meta{job: "job", phase: 1, step: step, n: len(data)}.header()
		h.Set(hSync, kind)
		h.Set(hSyncLo, strconv.Itoa(lo))
		h.Set(hSyncHi, strconv.Itoa(hi))
		h.Set(hSyncN, strconv.Itoa(vec))
		h.Set(hLR, "0.1")
		return h
	}
	moments := func(lo, hi int) []float32 {
		v := make([]float32, 2*(hi-lo))
		for i := range v {
			v[i] = float32(lo + i)
		}
		return v
	}
	if err := forger.PublishMsg(&nats.Msg{Subject: "lathe.job.w.a.sync", Header: part(k, "moments", 0, 500, n, make([]byte, 8)), Data: make([]byte, 8)}); err != nil {
		t.Fatal(err)
	}
	signed := newLink(forger, secret)
	refused := 0
	for _, f := range []struct {
		subject string
		h       nats.Header
		want    string
	}{
		{"lathe.job.w.x.sync", part(k, "moments", 0, 500, n, make([]byte, 8)), "not a member"},
		{"lathe.job.w.a.sync", part(100*k, "moments", 0, 500, n, make([]byte, 8)), "past the state taken"},
		{"lathe.job.w.a.sync", part(k, "moments", 0, 2*n, n, make([]byte, 8)), "optimizer state of"},
		{"lathe.job.w.a.sync", part(k, "weights", 0, 500, n, make([]byte, 8)), "kind"},
		{"lathe.job.w.b.sync", at(part(k, "moments", 0, 500, n, make([]byte, 8)), "9223372036854775807"), "at byte"},
		{"lathe.job.w.b.sync", at(part(k, "moments", 0, 500, n, make([]byte, 8)), "-8"), "at byte"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m, err := signed.requestMsg(ctx, f.subject, f.h, make([]byte, 8))
		cancel()
		if err != nil || !bytesContain(m.Data, f.want) {
			t.Fatalf("a forged part %s: answer %q, %v; want %q", f.h.Get(hSync), answerOf(m), err, f.want)
		}
		refused++
	}
	// A member's chunk of a vector of another length is placed, and never
	// taken for this one's.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if m, err := signed.requestMsg(ctx, "lathe.job.w.a.sync", part(k, "moments", 500, 1000, 2*n, make([]byte, 8)), make([]byte, 8)); err != nil || string(m.Data) != "ok" {
		t.Fatalf("a chunk of another vector: %q, %v", answerOf(m), err)
	}
	// Part of a state of step k offered before at another size (a worker
	// that redid the step after a membership change offers it again):
	// the newer offer replaces it.
	older := meta{job: "job", phase: 1, step: k, n: 24}.header()
	older.Set(hSync, "state")
	older.Set(hLR, "0.2")
	if m, err := signed.requestMsg(ctx, "lathe.job.w.b.sync", older, make([]byte, 8)); err != nil || string(m.Data) != "ok" {
		t.Fatalf("part of a state: %q, %v", answerOf(m), err)
	}
	sn := &trainer.Snapshot{Step: k, Epoch: 0, StepInEpoch: k, Params: [][]float32{{1, 2, 3}}, LossSum: 1.5}
	errs := make(chan error, 2)
	for j, name := range members {
		lo, hi := chunk(n, 2, j)
		go func() {
			errs <- reps[name].Offer(ctx, &trainer.SyncState{Snapshot: sn, LR: 0.1, Chunks: []trainer.ChunkState{{Lo: lo, Hi: hi, Moments: moments(lo, hi)}}})
		}()
	}
	st, err := coord.Take(ctx, k, n, trainer.Step{})
	if err != nil {
		t.Fatal(err)
	}
	for range members {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if st.LR != 0.1 || st.Snapshot.Step != k || st.Snapshot.LossSum != 1.5 || !slices.Equal(st.Snapshot.Params[0], []float32{1, 2, 3}) {
		t.Fatalf("the state taken: LR %v, snapshot %+v", st.LR, st.Snapshot)
	}
	if len(st.Chunks) != 2 || st.Chunks[0].Lo != 0 || st.Chunks[1].Hi != n || st.Chunks[0].Hi != st.Chunks[1].Lo {
		t.Fatalf("chunks %v", st.Chunks)
	}
	for _, c := range st.Chunks {
		if !slices.Equal(c.Moments, moments(c.Lo, c.Hi)) {
			t.Fatalf("the optimizer state of [%d, %d) changed on the way", c.Lo, c.Hi)
		}
	}
	if got := coord.Stats().MessagesRejected; got != int64(refused+1) {
		t.Fatalf("%d messages refused, want %d", got, refused+1)
	}
	if d, ok, _ := coord.digest(k); !ok || d != trainer.ParamsDigest(sn.Params) {
		t.Fatal("the coordinator keeps no digest of the state it took")
	}
	for _, name := range members {
		if d, ok, _ := reps[name].digest(k); !ok || d != trainer.ParamsDigest(sn.Params) {
			t.Fatalf("%s keeps no digest of the state it offered", name)
		}
	}
	// A worker that missed the coordinator's announcement of the state it
	// took (core NATS delivers at most once) hears it again while the
	// coordinator waits for the next sync point.
	for deadline := time.Now().Add(10 * time.Second); reps["b"].coordSteps.Load() != k; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the coordinator did not announce the state it took")
		}
	}
	reps["b"].coordSteps.Store(0) // the announcement lost
	wctx, stopWaiting := context.WithCancel(ctx)
	waited := make(chan error, 1)
	go func() {
		_, err := coord.Take(wctx, 2*k, n, trainer.Step{})
		waited <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); reps["b"].coordSteps.Load() != k; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the coordinator's state was not announced again to a worker that missed it")
		}
	}
	stopWaiting()
	if err := <-waited; !errors.Is(err, context.Canceled) {
		t.Fatalf("Take, cancelled: %v", err)
	}
	// Offer returns while the parts travel; a state the coordinator
	// refuses (a step too far past the one it took) fails the worker's
	// next step.
	far := int64(k) + int64(k) + Window + 8
	lo, hi := chunk(n, 2, 0)
	if err := reps["a"].Offer(ctx, &trainer.SyncState{Snapshot: &trainer.Snapshot{Step: far, Params: sn.Params}, Chunks: []trainer.ChunkState{{Lo: lo, Hi: hi, Moments: moments(lo, hi)}}}); err != nil {
		t.Fatalf("an offer returned %v", err)
	}
	for deadline := time.Now().Add(10 * time.Second); reps["a"].faulted() == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a state the coordinator refused left the worker going")
		}
	}
	if err := reps["a"].faulted(); !strings.Contains(err.Error(), "refused the state") {
		t.Fatalf("the worker's fault: %v", err)
	}
	// A restart planned from the state taken: Take asks for it to be
	// shared first.
	coord.joinAt.Store(k)
	if _, err := coord.Take(ctx, 2*k, n, trainer.Step{}); !errors.Is(err, trainer.ErrShareFirst) {
		t.Fatalf("Take with a restart planned: %v", err)
	}
}

// at sets a part's offset.
func at(h nats.Header, off string) nats.Header {
	h.Set(hOff, off)
	return h
}

func bytesContain(b []byte, s string) bool {
	return len(s) > 0 && string(b) != "ok" && strings.Contains(string(b), s)
}

func answerOf(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}

// FuzzSyncPart: a sync part's offset and bytes, whatever they claim, are
// refused or placed inside the state they belong to — never a panic.
func FuzzSyncPart(f *testing.F) {
	f.Add(0, 64, []byte{1, 2, 3, 4})
	f.Add(1<<62, 64, []byte{1, 2, 3, 4})
	f.Add(-4, 8, []byte{1, 2, 3, 4})
	f.Add(60, 64, []byte{1, 2, 3, 4, 5})
	f.Fuzz(func(t *testing.T, off, size int, data []byte) {
		if size < 0 || size > 1<<16 {
			return // refused before a blob is made (MaxSyncBlob bounds it)
		}
		b := &blob{b: make([]byte, size), placed: map[int]int{}}
		first := b.place(off, data)
		if first == nil && (off < 0 || off+len(data) > size) {
			t.Fatalf("%d bytes placed at %d of %d", len(data), off, size)
		}
		if again := b.place(off, data); (first == nil) != (again == nil) {
			t.Fatalf("the same part again: %v, first %v", again, first)
		}
		if b.got > size {
			t.Fatalf("%d bytes placed of %d", b.got, size)
		}
	})
}

// TestRestartedReplicaCarriesTheCounts: a worker's replica that replaces
// another of the same phase (a restart from the coordinator's state)
// carries its counts on — micro-shards, bytes, step time, what its NATS
// connection published — but not its refused messages, which the worker
// counts when it closes the old one.
func TestRestartedReplicaCarriesTheCounts(t *testing.T) {
	_, conn := embedded(t)
	nc := conn("a")
	old, err := NewReplica(nc, nil, "job", "a", 1, 2, 1, []string{"a"}, testLog(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	old.stats = Stats{Shards: 10, BytesSent: 1000, PeerBytesSent: 600, BrokerBytesSent: 400, MessagesRejected: 3, ComputeSeconds: 1.5, StepSeconds: 2, WaitSeconds: 0.25}
	if err := nc.Publish("lathe.job.elsewhere", make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	published := old.Stats().NATSBytesOut
	old.Close()
	r, err := NewReplica(nc, nil, "job", "a", 1, 2, 2, []string{"a", "b"}, testLog(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.carry(old)
	st := r.Stats()
	if st.Shards != 10 || st.BytesSent != 1000 || st.PeerBytesSent != 600 || st.BrokerBytesSent != 400 || st.ComputeSeconds != 1.5 || st.StepSeconds != 2 || st.WaitSeconds != 0.25 {
		t.Fatalf("counts carried: %+v", st)
	}
	if st.MessagesRejected != 0 || published < 100 || st.NATSBytesOut < published {
		t.Fatalf("refused %d (want 0), published %d before and %d after", st.MessagesRejected, published, st.NATSBytesOut)
	}
}

// TestSteadyPaceStartsWhereItsStepsWereTimed: a replica that completes
// steps one by one times its pace from the SteadyAfter-th; a following
// coordinator completes a sync interval's steps at once, and its window
// starts at the first sync point past SteadyAfter and counts only the
// steps after it — not the ones it took with that sync point.
func TestSteadyPaceStartsWhereItsStepsWereTimed(t *testing.T) {
	_, conn := embedded(t)
	r, err := NewReplica(conn("a"), nil, "job", "a", 1, 2, 1, []string{"a"}, testLog(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pace := func(done int64) Stats {
		r.mu.Lock()
		r.paceLocked(done)
		r.mu.Unlock()
		return r.Stats()
	}
	for range SteadyAfter + 4 {
		pace(1)
	}
	if st := r.Stats(); st.SteadyFrom != SteadyAfter || st.SteadySteps != 4 {
		t.Fatalf("one by one: from %d, %d steps; want from %d, 4", st.SteadyFrom, st.SteadySteps, SteadyAfter)
	}
	f, err := NewReplica(conn("c"), nil, "job", "c", 1, 2, 1, []string{"a"}, testLog(t, "c"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r = f
	if st := pace(64); st.SteadyFrom != 64 || st.SteadySteps != 0 {
		t.Fatalf("after the first sync point: from %d, %d steps; want from 64, none", st.SteadyFrom, st.SteadySteps)
	}
	time.Sleep(20 * time.Millisecond)
	st := pace(64)
	if st.SteadyFrom != 64 || st.SteadySteps != 64 || st.SteadySeconds < 0.02 {
		t.Fatalf("after the second: from %d, %d steps in %.3f s; want from 64, 64 steps in 0.02 s or more", st.SteadyFrom, st.SteadySteps, st.SteadySeconds)
	}
}
