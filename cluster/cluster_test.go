package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"

	"github.com/lathe-ml/lathe/internal/testlog"
	"github.com/lathe-ml/lathe/trainer"
)

func embedded(t testing.TB) (*Embedded, func(name string) *nats.Conn) {
	t.Helper()
	srv, err := StartEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv, func(name string) *nats.Conn {
		nc, err := Connect(srv.URL, Auth{Token: srv.Token}, name, false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
}

func TestEmbeddedServerRefusesAWrongToken(t *testing.T) {
	srv, _ := embedded(t)
	if _, err := Connect(srv.URL, Auth{Token: "not-the-token"}, "intruder", false); err == nil {
		t.Fatal("a client with a wrong token connected")
	}
	if _, err := Connect(srv.URL, Auth{}, "intruder", false); err == nil {
		t.Fatal("a client without a token connected")
	}
}

// TestReductionIsExactAndRejectsForgeries reduces one step among three
// workers and the coordinator, with forged messages (another job, a stale
// step, a NaN) published in between: every replica gets the exact sum, and
// the forgeries are counted and change nothing.
func TestReductionIsExactAndRejectsForgeries(t *testing.T) {
	_, conn := embedded(t)
	members := []string{"a", "b", "c"}
	const n, shards = 1000, 6
	want := exactSum(n, shards)
	names := append(slices.Clone(members), coordinatorName)
	reps := map[string]*Replica{}
	for _, name := range names {
		r, err := NewReplica(conn(name), nil, "job", name, 1, shards, 1, members, testLog(t, name))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		reps[name] = r
	}
	forger := conn("forger")
	// Each forgery as a reduced chunk (the coordinator reads those) and
	// as an updated one (the workers do).
	forge := func(subject string, md meta, data []byte) {
		for _, sub := range []string{subject, strings.TrimSuffix(subject, ".ag") + ".wg"} {
			if err := forger.PublishMsg(&nats.Msg{Subject: sub, Header: md.header(), Data: data}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Before the step: a chunk for another job, for a stale phase, and one
	// with a NaN, all claiming to come from a.
	nan := encodeFloat32s(nil, []float32{float32(nanValue())})
	forge("lathe.job.w.a.ag", meta{job: "other", phase: 1, gen: 1, step: 0, n: n}, encodeFloat32s(nil, make([]float32, 10)))
	forge("lathe.job.w.a.ag", meta{job: "job", phase: 0, gen: 1, step: 0, n: n}, encodeFloat32s(nil, make([]float32, 10)))
	// (At an offset no genuine part starts at: a forgery that repeats a
	// part already placed is dropped as a duplicate, uncounted.)
	forge("lathe.job.w.a.ag", meta{job: "job", phase: 1, gen: 1, step: 0, off: 1, n: n}, nan)
	_ = forger.Flush()
	time.Sleep(100 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	results := map[string][]float32{}
	var mu sync.Mutex
	errs := make(chan error, len(names))
	done := make(chan struct{})
	for _, name := range names {
		go func(name string) {
			v, err := reduce(ctx, reps[name], 0, n, shardAdder(0))
			if err == nil {
				mu.Lock()
				results[name] = v
				mu.Unlock()
			}
			errs <- err
		}(name)
	}
	go func() {
		for range names {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		close(done)
	}()
	<-done
	for _, name := range names {
		if !slices.Equal(results[name], want) {
			t.Fatalf("%s reduced a different vector", name)
		}
	}
	// After the step: a stale one.
	forge("lathe.job.w.a.ag", meta{job: "job", phase: 1, gen: 1, step: 0, n: n}, encodeFloat32s(nil, make([]float32, 10)))
	_ = forger.Flush()
	// Four forgeries, seen by the three replicas other than a (as reduced
	// or updated chunks). A part held for a vector not running yet is
	// refused when it is offered again, on a goroutine of its own: on a
	// loaded machine the count may get there a while after the step.
	var rejected int64
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		rejected = 0
		for _, name := range names {
			rejected += reps[name].Stats().MessagesRejected
		}
		if rejected >= 4*3 || time.Now().After(deadline) {
			break
		}
	}
	if rejected < 4*3 {
		t.Fatalf("%d rejections, want at least 12", rejected)
	}
}

// contribution is micro-shard k's part of element i in the reduction
// tests: (k+1)·(i+1)/7, not exact in binary, so the fixed-point sum is
// what makes the order not matter.
func contribution(k, i int) float32 { return float32(k+1) * float32(i+1) / 7 }

// exactSum is the reduced vector of n elements over shards micro-shards.
func exactSum(n, shards int) []float32 {
	var want []float32
	for i := range n {
		var q int64
		for k := range shards {
			v, _ := trainer.ToFixed(contribution(k, i))
			q += v
		}
		want = append(want, trainer.FromFixed(q))
	}
	return want
}

// shardAdder computes micro-shards' contributions, taking perShard each.
func shardAdder(perShard time.Duration) func([]int, []int64) error {
	return func(ks []int, into []int64) error {
		time.Sleep(time.Duration(len(ks)) * perShard)
		for _, k := range ks {
			for i := range into {
				q, _ := trainer.ToFixed(contribution(k, i))
				into[i] += q
			}
		}
		return nil
	}
}

func nanValue() float64 { var z float64; return z / z }

// newCoordinator serves job "job" on a connection of its own until the
// test ends.
func newCoordinator(t *testing.T, conn func(string) *nats.Conn) *Coordinator {
	return newSignedCoordinator(t, conn, nil)
}

// newSignedCoordinator is newCoordinator with the job's secret.
func newSignedCoordinator(t *testing.T, conn func(string) *nats.Conn, secret []byte) *Coordinator {
	t.Helper()
	coord, err := NewCoordinator(conn("coordinator"), "job", secret, testLog(t, "coordinator"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(coord.Close)
	return coord
}

// testLogs holds each test's log lines, printed if the test fails: the
// coordinator's and the workers' account of a cluster test gone wrong.
var testLogs sync.Map // *testing.T → *testlog.Buffer

// testLog is a debug logger named name writing to t's log buffer.
func testLog(t testing.TB, name string) hclog.Logger {
	buf, loaded := testLogs.LoadOrStore(t, &testlog.Buffer{})
	lb := buf.(*testlog.Buffer)
	if !loaded {
		t.Cleanup(func() {
			testLogs.Delete(t)
			if t.Failed() {
				t.Logf("cluster log:\n%s", lb.String())
			}
		})
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Output: lb, Level: hclog.Debug})
}

// int64s decodes a narrow part as a replica does.
func int64s(b []byte) ([]int64, error) {
	n, err := int64sCount(b)
	if err != nil {
		return nil, err
	}
	v := make([]int64, n)
	decodeInt64s(v, b)
	return v, nil
}

// reduce runs a step whose micro-shards compute computes, without an
// update: the vector reduced. The ranges it finishes are reported as a
// trainer might: the others' in five pieces, last first, then its own.
func reduce(ctx context.Context, r *Replica, step int64, n int, compute func([]int, []int64) error) ([]float32, error) {
	v, _, err := r.Reduce(ctx, step, n, trainer.Step{Compute: func(ks []int, into []int64, fresh bool, fin *trainer.Finishing) error {
		if fresh {
			clear(into)
		}
		if err := compute(ks, into); err != nil || fin == nil {
			return err
		}
		for k := 4; k >= 0; k-- {
			a, b := k*n/5, (k+1)*n/5
			if a < fin.Lo {
				fin.Done(a, min(b, fin.Lo))
			}
			if b > fin.Hi {
				fin.Done(max(a, fin.Hi), b)
			}
		}
		fin.Done(fin.Lo, fin.Hi)
		return nil
	}})
	return v, err
}

// reduceSteps runs steps [from, to) as par, whose micro-shards add
// computes, and checks each reduces to want.
func reduceSteps(ctx context.Context, par *Replica, name string, from, to int64, want []float32, add func([]int, []int64) error) error {
	for s := from; s < to; s++ {
		v, err := reduce(ctx, par, s, len(want), add)
		if err != nil {
			return err
		}
		if !slices.Equal(v, want) {
			return fmt.Errorf("%s: step %d reduced a different vector", name, s)
		}
	}
	return nil
}

// coordinatorStep reduces step s as the coordinator's replica, checks it,
// and fails on an error a worker reported.
func coordinatorStep(ctx context.Context, t *testing.T, rep *Replica, s int64, want []float32, errs <-chan error) {
	t.Helper()
	if err := reduceSteps(ctx, rep, "coordinator", s, s+1, want, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

// serve runs w until ctx ends, reporting any other end on errs.
func serve(ctx context.Context, w *Worker, errs chan<- error) {
	go func() {
		if err := w.Serve(ctx); err != nil && ctx.Err() == nil {
			errs <- err
		}
	}()
}

func TestPlanAndChunksCoverEverything(t *testing.T) {
	for size := 1; size <= 9; size++ {
		var ks []int
		hi := 0
		for r := range size {
			ks = append(ks, plan(8, nil, size, r)...)
			lo, h := chunk(1001, size, r)
			if lo != hi {
				t.Fatalf("size %d: chunk %d starts at %d, not %d", size, r, lo, hi)
			}
			hi = h
		}
		if hi != 1001 || !slices.Equal(ks, []int{0, 1, 2, 3, 4, 5, 6, 7}) {
			t.Fatalf("size %d: shards %v, chunks end at %d", size, ks, hi)
		}
	}
}

// TestStepReducedBeforeALossIsKept: two workers reduce a step and move
// on; the coordinator, lagging, learns of a new generation (one worker
// lost) before it takes up that step. The chunks it already holds from
// the old generation are the step's reduced vector — the worker left
// will not compute that step again — so it must finish at once, with the
// exact sum.
func TestStepReducedBeforeALossIsKept(t *testing.T) {
	_, conn := embedded(t)
	members := []string{"a", "b"}
	const n, shards = 500, 4
	contribution := func(k, i int) float32 { return float32(k+2) * float32(i+1) / 3 }
	compute := func(ks []int, into []int64) error {
		for _, k := range ks {
			for i := range into {
				q, _ := trainer.ToFixed(contribution(k, i))
				into[i] += q
			}
		}
		return nil
	}
	reps := map[string]*Replica{}
	for _, name := range append(slices.Clone(members), coordinatorName) {
		r, err := NewReplica(conn(name), nil, "job", name, 1, shards, 1, members, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		reps[name] = r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	got := map[string][]float32{}
	var mu sync.Mutex
	for _, name := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := reduce(ctx, reps[name], 0, n, compute)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			got[name] = v
			mu.Unlock()
		}()
	}
	wg.Wait()
	// The coordinator has received both chunks; now b is lost.
	deadline := time.Now().Add(5 * time.Second)
	for {
		reps[coordinatorName].mu.Lock()
		have := reps[coordinatorName].assembledLocked(0, n) != nil
		reps[coordinatorName].mu.Unlock()
		if have || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	reps[coordinatorName].SetGen(2, []string{"a"}, nil, "", 0)
	start := time.Now()
	v, err := reduce(ctx, reps[coordinatorName], 0, n, func([]int, []int64) error {
		t.Error("the coordinator computes nothing")
		return nil
	})
	if err != nil {
		t.Fatalf("the coordinator could not complete a step reduced before the loss: %v", err)
	}
	if !slices.Equal(v, got["a"]) || !slices.Equal(v, got["b"]) {
		t.Fatal("the coordinator's step differs from the workers'")
	}
	if d := time.Since(start); d > ResendAfter {
		t.Fatalf("took %v: it waited for a chunk nobody will send", d)
	}
}

// TestWorkerJoinsTheNextPhaseWhileTheLastWindsDown: the coordinator starts
// a phase while a worker's last phase has not returned yet (its final
// evaluation, say). The worker stops the old phase and takes part in the
// new one — sitting it out would leave the others waiting for its share.
func TestWorkerJoinsTheNextPhaseWhileTheLastWindsDown(t *testing.T) {
	_, conn := embedded(t)
	coord := newCoordinator(t, conn)
	second := make(chan uint64, 1)
	w := &Worker{Log: testLog(t, "w1"), NC: conn("w1"), Job: "job", Name: "w1", Device: "cpu",
		Run: func(ctx context.Context, spec PhaseSpec, _ map[string][]byte, par *Replica) error {
			if spec.Name == "first" {
				<-ctx.Done() // still winding down when the next phase comes
				return ctx.Err()
			}
			second <- par.phase
			return nil
		}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- w.Serve(ctx) }()
	if err := coord.WaitWorkers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := coord.Phase(ctx, PhaseSpec{Name: "first", MicroShards: 2}, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	coord.EndPhase()
	if _, err := coord.Phase(ctx, PhaseSpec{Name: "second", MicroShards: 2}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-second:
		if p != 2 {
			t.Fatalf("joined phase %d, want 2", p)
		}
	case err := <-served:
		t.Fatalf("the worker stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the worker sat the second phase out")
	}
	for _, info := range coord.Workers() {
		if info.State == "failed" || info.State == "lost" {
			t.Fatalf("the worker is %s after the first phase was stopped: %s", info.State, info.Error)
		}
	}
}

// TestWorkerRegistersWithARestartedCoordinator: a worker on a shared NATS
// outlives its coordinator; the coordinator that replaces it (same job)
// hears the worker's heartbeats, asks it to register, and runs a phase
// on it.
func TestWorkerRegistersWithARestartedCoordinator(t *testing.T) {
	_, conn := embedded(t)
	nc1 := conn("coordinator-1")
	first, err := NewCoordinator(nc1, "job", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	ran := make(chan string, 4)
	w := &Worker{Log: testLog(t, "w1"), NC: conn("w1"), Job: "job", Name: "w1", Device: "cpu",
		Run: func(ctx context.Context, spec PhaseSpec, _ map[string][]byte, par *Replica) error {
			ran <- spec.Name
			if spec.Name == "before" {
				<-ctx.Done() // the old coordinator's phase never ends by itself
				return ctx.Err()
			}
			return nil
		}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- w.Serve(ctx) }()
	if err := first.WaitWorkers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Phase(ctx, PhaseSpec{Name: "before", MicroShards: 2}, nil); err != nil {
		t.Fatal(err)
	}
	if got := <-ran; got != "before" {
		t.Fatalf("ran %q", got)
	}
	nc1.Close() // the coordinator is gone, mid-phase, without a word

	second, err := NewCoordinator(conn("coordinator-2"), "job", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := second.WaitWorkers(wctx, 1); err != nil {
		t.Fatalf("the worker never registered with the new coordinator: %v", err)
	}
	if _, err := second.Phase(ctx, PhaseSpec{Name: "after", MicroShards: 2}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ran:
		if got != "after" {
			t.Fatalf("ran %q", got)
		}
	case err := <-served:
		t.Fatalf("the worker stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not take part in the new coordinator's phase")
	}
}

func TestWeightedSharesAndPlans(t *testing.T) {
	for _, tc := range []struct {
		name   string
		shards int
		caps   []float64
		want   []int
	}{
		{"equal", 8, []float64{1, 1}, []int{4, 4}},
		{"four to one", 16, []float64{400, 100}, []int{13, 3}},
		{"remainders to the largest", 10, []float64{1, 1, 1}, []int{4, 3, 3}},
		{"a GPU beside CPUs: one gets none", 32, []float64{50000, 1000, 1000}, []int{31, 1, 0}},
		{"unknown capacity", 8, []float64{1, 0}, nil},
		{"no workers", 8, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := weightedShares(tc.shards, tc.caps)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("weightedShares(%d, %v) = %v, want %v", tc.shards, tc.caps, got, tc.want)
			}
			if got == nil {
				return
			}
			var ks []int
			for r := range got {
				ks = append(ks, plan(tc.shards, got, len(got), r)...)
			}
			for i, k := range ks {
				if k != i || len(ks) != tc.shards {
					t.Fatalf("plans %v do not cover [0, %d) once", ks, tc.shards)
				}
			}
		})
	}
	// Shares that do not fit fall back to the equal split.
	if got := plan(8, []int{5, 5}, 2, 1); !slices.Equal(got, []int{4, 5, 6, 7}) {
		t.Fatalf("plan with shares summing past the micro-shards: %v", got)
	}
	if a, b := stepTime(16, nil, []float64{4, 1}), stepTime(16, []int{13, 3}, []float64{4, 1}); !(b < a) {
		t.Fatalf("step time %v with the weighted split, %v equal", b, a)
	}
}

// TestStepIsSplitByMeasuredSpeed: two workers, one four times slower per
// micro-shard. The coordinator measures their speeds from heartbeats,
// re-splits the step in proportion (a generation with the same members),
// and every step still reduces to the exact same vector.
func TestStepIsSplitByMeasuredSpeed(t *testing.T) {
	defer func(e time.Duration) { RebalanceEvery = e }(RebalanceEvery)
	RebalanceEvery = 300 * time.Millisecond
	_, conn := embedded(t)
	coord := newCoordinator(t, conn)
	const n, shards, steps = 64, 16, 120
	want := exactSum(n, shards)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errs := make(chan error, 2)
	for name, per := range map[string]time.Duration{"fast": 2 * time.Millisecond, "slow": 8 * time.Millisecond} {
		w := &Worker{Log: testLog(t, name), NC: conn(name), Job: "job", Name: name, Device: "cpu",
			Run: func(ctx context.Context, _ PhaseSpec, _ map[string][]byte, par *Replica) error {
				return reduceSteps(ctx, par, name, 0, steps, want, shardAdder(per))
			}}
		serve(ctx, w, errs)
	}
	if err := coord.WaitWorkers(ctx, 2); err != nil {
		t.Fatal(err)
	}
	rep, err := coord.Phase(ctx, PhaseSpec{Name: "p", MicroShards: shards, SamplesPerShard: 8}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for s := range int64(steps) {
		coordinatorStep(ctx, t, rep, s, want, errs)
	}
	st, shares := coord.Stats(), coord.Shares()
	t.Logf("rebalances %d, shares %v, workers %+v", st.Rebalances, shares, coord.Workers())
	if st.Rebalances < 1 || shares == nil {
		t.Fatalf("the step was never re-split (rebalances %d, shares %v)", st.Rebalances, shares)
	}
	if shares["fast"]+shares["slow"] != shards || shares["fast"] < 3*shares["slow"] {
		t.Fatalf("shares %v for a worker four times faster", shares)
	}
	for _, w := range coord.Workers() {
		if w.Capacity <= 0 || w.Share != shares[w.Name] {
			t.Fatalf("worker %s: capacity %v, share %d (shares %v)", w.Name, w.Capacity, w.Share, shares)
		}
	}
}

// TestDriftedWorkerIsLeftOut: replicas report a digest of their weights
// every few steps; one worker's stops matching the coordinator's (its
// memory corrupted, say). The coordinator counts the mismatch, leaves that
// worker out, and the step goes on with the other, exact.
func TestDriftedWorkerIsLeftOut(t *testing.T) {
	defer func(e int64) { DigestEvery = e }(DigestEvery)
	DigestEvery = 5
	_, conn := embedded(t)
	coord := newCoordinator(t, conn)
	const n, shards, steps = 16, 4, 150
	want := exactSum(n, shards)
	compute := shardAdder(5 * time.Millisecond) // two shards each: 10 ms a step
	digestAfter := func(step int64, drifted bool) string {
		if drifted {
			return fmt.Sprintf("drifted-%d", step)
		}
		return fmt.Sprintf("weights-%d", step)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, name := range []string{"good", "bad"} {
		w := &Worker{Log: testLog(t, name), NC: conn(name), Job: "job", Name: name, Device: "cpu",
			Run: func(ctx context.Context, _ PhaseSpec, _ map[string][]byte, par *Replica) error {
				for s := range int64(steps) {
					if _, err := reduce(ctx, par, s, n, compute); err != nil {
						return err
					}
					if (s+1)%DigestEvery == 0 {
						par.SetDigest(s+1, digestAfter(s+1, name == "bad" && s >= 40))
					}
				}
				return nil
			}}
		go func() { _ = w.Serve(ctx) }()
	}
	if err := coord.WaitWorkers(ctx, 2); err != nil {
		t.Fatal(err)
	}
	rep, err := coord.Phase(ctx, PhaseSpec{Name: "p", MicroShards: shards, SamplesPerShard: 4}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for s := range int64(steps) {
		v, err := reduce(ctx, rep, s, n, nil)
		if err != nil {
			t.Fatalf("step %d: %v", s, err)
		}
		if !slices.Equal(v, want) {
			t.Fatalf("step %d reduced a different vector", s)
		}
		if (s+1)%DigestEvery == 0 {
			rep.SetDigest(s+1, digestAfter(s+1, false))
		}
	}
	st := coord.Stats()
	if st.DigestMismatches != 1 || st.DigestsCompared < 2 || st.WorkersFailed != 1 {
		t.Fatalf("digests compared %d, mismatches %d, workers failed %d", st.DigestsCompared, st.DigestMismatches, st.WorkersFailed)
	}
	for _, w := range coord.Workers() {
		if (w.Name == "bad") != (w.State == "failed") || (w.Name == "bad" && !strings.Contains(w.Error, "differ from the coordinator's")) {
			t.Fatalf("worker %s: %s %q", w.Name, w.State, w.Error)
		}
	}
}

// TestNarrowPartialsRoundTrip: the narrow int64 encoding gives every value
// back exactly, at the fewest bytes that hold the part's largest.
func TestNarrowPartialsRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		v     []int64
		width int
	}{
		{nil, 1},
		{[]int64{0, 1, -1, 127, -128}, 1},
		{[]int64{128}, 2},
		{[]int64{-129, 5}, 2},
		{[]int64{1 << 38, -(1 << 38)}, 5},
		{[]int64{math.MaxInt64, math.MinInt64, 0}, 8},
		{[]int64{1<<47 - 1, -(1 << 47)}, 6},
	} {
		b := encodeInt64s(nil, tc.v)
		if int(b[0]) != tc.width || len(b) != 1+tc.width*len(tc.v) {
			t.Fatalf("%v: width %d, %d bytes; want width %d", tc.v, b[0], len(b), tc.width)
		}
		got, err := int64s(b)
		if err != nil || !slices.Equal(got, tc.v) && len(tc.v) > 0 {
			t.Fatalf("%v: decoded %v, %v", tc.v, got, err)
		}
	}
	for _, bad := range [][]byte{{}, {0}, {9, 1}, {3, 1, 2}} {
		if _, err := int64s(bad); err == nil {
			t.Fatalf("%v decoded", bad)
		}
	}
	// Long parts of every width, against the format written out byte by
	// byte: the width byte, then each value's low w bytes.
	r := rand.New(rand.NewPCG(7, 8))
	for w := 1; w <= 8; w++ {
		for _, n := range []int{1, 7, 8, 9, 1001} {
			v := make([]int64, n)
			for i := range v {
				v[i] = int64(r.Uint64()) >> (64 - 8*w) // fits w bytes, both signs
			}
			v[r.IntN(n)] = -1 << (8*w - 1) // the narrowest of the width
			want := []byte{byte(w)}
			for _, x := range v {
				for k := range w {
					want = append(want, byte(uint64(x)>>(8*k)))
				}
			}
			b := encodeInt64s(nil, v)
			if !bytes.Equal(b, want) {
				t.Fatalf("width %d, %d values: encoded differently from the format", w, n)
			}
			got, err := int64s(b)
			if err != nil || !slices.Equal(got, v) {
				t.Fatalf("width %d, %d values: decoded %v", w, n, err)
			}
		}
	}
}

// decodePart decodes a whole float32 part as the replica's assemblies do.
func decodePart(b []byte) ([]float32, error) {
	n, err := float32sCount(b)
	if err != nil {
		return nil, err
	}
	v := make([]float32, n)
	return v, decodeFloat32s(v, b)
}

// TestFloatPartsRefuseNonFinite: a float32 part round-trips every finite
// value (zeros of both signs, subnormals, the largest) and is refused
// whole for a NaN or an Inf anywhere in it.
func TestFloatPartsRefuseNonFinite(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	v := make([]float32, 1001)
	for i := range v {
		v[i] = math.Float32frombits(r.Uint32())
		if f := float64(v[i]); math.IsNaN(f) || math.IsInf(f, 0) {
			v[i] = 0
		}
	}
	v[0], v[1], v[2], v[3] = float32(math.Copysign(0, -1)), math.SmallestNonzeroFloat32, math.MaxFloat32, -math.MaxFloat32
	got, err := decodePart(encodeFloat32s(nil, v))
	if err != nil {
		t.Fatal(err)
	}
	for i := range v {
		if math.Float32bits(got[i]) != math.Float32bits(v[i]) {
			t.Fatalf("value %d: %g came back as %g", i, v[i], got[i])
		}
	}
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		at := r.IntN(len(v))
		spoilt := slices.Clone(v)
		spoilt[at] = bad
		if _, err := decodePart(encodeFloat32s(nil, spoilt)); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("at %d", at)) {
			t.Fatalf("%v at %d: %v", bad, at, err)
		}
	}
}

// TestStoreObjectsAreSigned: the coordinator signs what it puts in the
// job's store; a worker with the job's secret takes it, and refuses an
// object someone else overwrote in the store, or one it cannot check.
func TestStoreObjectsAreSigned(t *testing.T) {
	_, conn := embedded(t)
	coord := newSignedCoordinator(t, conn, []byte("the job's secret"))
	got := make(chan map[string][]byte, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &Worker{Log: testLog(t, "w1"), NC: conn("w1"), Job: "job", Name: "w1", Device: "cpu", Secret: []byte("the job's secret"),
		Run: func(ctx context.Context, _ PhaseSpec, files map[string][]byte, _ *Replica) error {
			got <- files
			return nil
		}}
	go func() { _ = w.Serve(ctx) }()
	if err := coord.WaitWorkers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"teacher.arrow": []byte("teacher bytes")}
	spec := PhaseSpec{Name: "p1", MicroShards: 1, Teachers: []string{"teacher.arrow"}}
	if _, err := coord.Phase(ctx, spec, files); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-got:
		if string(f["teacher.arrow"]) != "teacher bytes" {
			t.Fatalf("files %q", f)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the phase did not start on the worker")
	}
	coord.EndPhase()
	// Someone with access to the store, but not the secret, replaces the
	// object (keeping a signature-looking description).
	js, err := conn("intruder").JetStream()
	if err != nil {
		t.Fatal(err)
	}
	obs, err := js.ObjectStore("lathe-job")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.Put(&nats.ObjectMeta{Name: "teacher.arrow", Description: objectMAC([]byte("a guess"), "teacher.arrow", []byte("poisoned"))},
		strings.NewReader("poisoned")); err != nil {
		t.Fatal(err)
	}
	spec.Name = "p2"
	if _, err := coord.Phase(ctx, spec, files); err != nil { // same bytes: not put again
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var info WorkerInfo
		for _, wi := range coord.Workers() {
			info = wi
		}
		if info.State == "failed" {
			if !strings.Contains(info.Error, "does not match its signature") {
				t.Fatalf("the worker failed for another reason: %s", info.Error)
			}
			break
		}
		select {
		case f := <-got:
			t.Fatalf("the worker trained on %q", f)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker took no notice of the overwritten object (state %s)", info.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The checks themselves.
	b := []byte("x")
	good := objectMAC([]byte("k"), "n", b)
	for _, tc := range []struct {
		secret, desc, name string
		ok                 bool
	}{
		{"k", good, "n", true},
		{"k", good, "other", false}, // a signature moved to another object
		{"", good, "n", false},      // signed, but this worker has no secret
		{"k", "", "n", false},       // unsigned, but this worker wants signatures
		{"", "", "n", true},
	} {
		if err := checkObject([]byte(tc.secret), tc.name, tc.desc, b); (err == nil) != tc.ok {
			t.Errorf("secret %q, object %q: %v", tc.secret, tc.name, err)
		}
	}
}

// TestWorkersJoinMidPhase: two workers train; a third registers while the
// phase runs and is planned in at a step ahead; before the coordinator
// reaches that step one of the first two is lost, so the join is called
// off and planned again among those left. The joiner starts from the
// coordinator's state at its first step (Admit), computes micro-shards
// from there, and every replica reduces every step to the exact vector.
func TestWorkersJoinMidPhase(t *testing.T) {
	_, conn := embedded(t)
	coord := newCoordinator(t, conn)
	coord.Dead = 600 * time.Millisecond
	const n, shards, steps = 64, 8, 90
	want := exactSum(n, shards)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errs := make(chan error, 3)
	var joinedAt atomic.Int64
	var joinerShards atomic.Int64
	joinedAt.Store(-1)
	cancels := map[string]context.CancelFunc{}
	conns := map[string]*nats.Conn{}
	start := func(name string) {
		wctx, stop := context.WithCancel(ctx)
		cancels[name], conns[name] = stop, conn(name)
		w := &Worker{Log: testLog(t, name), NC: conns[name], Job: "job", Name: name, Device: "cpu",
			Run: func(ctx context.Context, spec PhaseSpec, files map[string][]byte, par *Replica) error {
				if spec.StartStep > 0 {
					if string(files[spec.Resume]) != fmt.Sprintf("state at %d", spec.StartStep) {
						return fmt.Errorf("%s: joined at step %d with state %q", name, spec.StartStep, files[spec.Resume])
					}
					joinedAt.Store(spec.StartStep)
				}
				return reduceSteps(ctx, par, name, spec.StartStep, steps, want, func(ks []int, into []int64) error {
					if name == "c" {
						joinerShards.Add(int64(len(ks)))
					}
					return shardAdder(time.Millisecond)(ks, into)
				})
			}}
		serve(wctx, w, errs)
	}
	start("a")
	start("b")
	if err := coord.WaitWorkers(ctx, 2); err != nil {
		t.Fatal(err)
	}
	rep, err := coord.Phase(ctx, PhaseSpec{Name: "p", MicroShards: shards, SamplesPerShard: 8}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep.Joinable()
	killed := false
	for s := range int64(steps) {
		if rep.JoinAt(s) {
			if err := coord.Admit(s, []byte(fmt.Sprintf("state at %d", s))); err != nil {
				t.Fatal(err)
			}
		}
		if s == 5 {
			start("c")
		}
		if !killed && rep.joinAt.Load() >= 0 {
			// The join is planned: lose b before the coordinator gets there.
			killed = true
			cancels["b"]()
			conns["b"].Close()
		}
		if s > 5 && s < 40 {
			time.Sleep(60 * time.Millisecond) // the loss is noticed before the join's step
		}
		coordinatorStep(ctx, t, rep, s, want, errs)
	}
	st := coord.Stats()
	t.Logf("stats %+v, joined at step %d, joiner's micro-shards %d", st, joinedAt.Load()+1, joinerShards.Load())
	if !killed || st.WorkersLost != 1 || st.WorkersJoined != 1 || joinedAt.Load() <= 5 || joinerShards.Load() == 0 {
		t.Fatalf("killed %v, stats %+v, joined at %d, joiner's micro-shards %d", killed, st, joinedAt.Load(), joinerShards.Load())
	}
	// At least one micro-shard of every step from its first (the split may
	// follow measured speeds once it is in).
	if got, from := joinerShards.Load(), joinedAt.Load(); got < steps-from {
		t.Fatalf("the joiner computed %d micro-shards over the %d steps from step %d", got, steps-from, from+1)
	}
}

// TestTasksGoToIdleWorkersAndSurviveALoss: job-parallel tasks spread over
// two workers; one of them stalls on its task and is killed, and that task
// goes to the other. Outputs come back through the store, signed; a result
// from a worker that was handed no task is rejected.
func TestTasksGoToIdleWorkersAndSurviveALoss(t *testing.T) {
	_, conn := embedded(t)
	coord := newSignedCoordinator(t, conn, []byte("job secret"))
	coord.Dead = 600 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stalled := make(chan struct{})
	conns := map[string]*nats.Conn{}
	cancels := map[string]context.CancelFunc{}
	for _, name := range []string{"a", "b"} {
		wctx, stop := context.WithCancel(ctx)
		conns[name], cancels[name] = conn(name), stop
		w := &Worker{Log: testLog(t, name), NC: conns[name], Job: "job", Name: name, Device: "cpu", Secret: coord.Secret,
			Task: func(ctx context.Context, spec TaskSpec, files map[string][]byte) ([]byte, map[string][]byte, error) {
				if string(files["input"]) != "shared input" {
					return nil, nil, fmt.Errorf("input %q", files["input"])
				}
				if name == "b" {
					close(stalled)
					<-ctx.Done() // stalls until killed
					return nil, nil, ctx.Err()
				}
				time.Sleep(50 * time.Millisecond)
				return []byte(fmt.Sprintf(`{"lo":%d}`, spec.Lo)), map[string][]byte{"out/value": []byte(fmt.Sprint(spec.Lo * 10))}, nil
			}}
		go func() { _ = w.Serve(wctx) }()
	}
	if err := coord.WaitWorkers(ctx, 2); err != nil {
		t.Fatal(err)
	}
	go func() {
		<-stalled
		// b is lost mid-task; meanwhile a forger answers for a task it
		// was not given.
		conns["b"].Close()
		cancels["b"]()
		forger := conn("c")
		b, _ := json.Marshal(TaskResult{ID: "t1", Summary: json.RawMessage(`{"lo":999}`)})
		_ = forger.Publish("lathe.job.w.c.done", b)
		_ = forger.Flush()
	}()
	var tasks []TaskSpec
	for k := range 6 {
		tasks = append(tasks, TaskSpec{ID: fmt.Sprintf("t%d", k), Kind: "test", Inputs: []string{"input"}, Lo: k})
	}
	got := map[string]string{}
	st, err := coord.RunTasks(ctx, tasks, map[string][]byte{"input": []byte("shared input")}, func(t TaskSpec, o TaskOutcome) error {
		if o.Error != "" {
			return fmt.Errorf("task %s on %s: %s", t.ID, o.Worker, o.Error)
		}
		got[t.ID] = fmt.Sprintf("%s %s %s", o.Worker, o.Summary, o.Files["out/value"])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats %+v, results %v", st, got)
	if len(got) != 6 || st.Retried != 1 || st.PerWorker["a"] != 6 || coord.Stats().MessagesRejected == 0 {
		t.Fatalf("stats %+v, results %v, rejected %d", st, got, coord.Stats().MessagesRejected)
	}
	for k := range 6 {
		if want := fmt.Sprintf(`a {"lo":%d} %d`, k, k*10); got[fmt.Sprintf("t%d", k)] != want {
			t.Fatalf("task t%d: %q, want %q", k, got[fmt.Sprintf("t%d", k)], want)
		}
	}
}

// TestDiscoveredJobGoneBeforeRegistering: a worker without --job finds a
// job by discovery whose coordinator never answers its registration (it
// ended meanwhile); it looks again and joins the next job.
func TestDiscoveredJobGoneBeforeRegistering(t *testing.T) {
	defer func(d time.Duration) { JobGoneAfter = d }(JobGoneAfter)
	JobGoneAfter = 300 * time.Millisecond
	_, conn := embedded(t)
	ghost := conn("ghost")
	sub, err := ghost.Subscribe("lathe.discover", func(m *nats.Msg) { _ = m.Respond([]byte("ghost")) })
	if err != nil {
		t.Fatal(err)
	}
	_ = ghost.Flush()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w := &Worker{Log: testLog(t, "w"), NC: conn("w"), Name: "w", Device: "cpu"}
	errs := make(chan error, 1)
	serve(ctx, w, errs)
	time.Sleep(200 * time.Millisecond) // it has found the ghost and tries to register
	_ = sub.Unsubscribe()
	coord, err := NewCoordinator(conn("coordinator"), "real", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer coord.Close()
	if err := coord.WaitWorkers(ctx, 1); err != nil {
		t.Fatalf("the worker never joined the next job: %v", err)
	}
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

// TestOldGenerationChunksStillReduce: a replica lagging behind (the
// coordinator's) holds a step's chunks from the generation the workers
// reduced it under, then hears of two newer ones (a re-split, then a
// loss) before it gets to that step: those chunks still make the step,
// though no worker would send them again.
func TestOldGenerationChunksStillReduce(t *testing.T) {
	_, conn := embedded(t)
	const n, step = 64, 3
	rep, err := NewReplica(conn("coordinator"), nil, "job", coordinatorName, 1, 8, 2, []string{"a", "b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	want := make([]float32, n)
	for i := range want {
		want[i] = float32(i) / 8
	}
	for j, name := range []string{"a", "b"} {
		lo, hi := chunk(n, 2, j)
		md := meta{job: "job", phase: 1, gen: 2, step: step, n: n, off: lo}
		nc := conn(name)
		if err := nc.PublishMsg(&nats.Msg{Subject: "lathe.job.w." + name + ".ag", Header: md.header(), Data: encodeFloat32s(nil, want[lo:hi])}); err != nil {
			t.Fatal(err)
		}
		_ = nc.Flush()
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		// Held until the replica runs a step of that length, or placed.
		rep.mu.Lock()
		got := len(rep.chunks) + len(rep.held)
		rep.mu.Unlock()
		if got == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 2 chunks arrived", got)
		}
	}
	rep.SetGen(3, []string{"a", "b"}, []int{3, 5}, "", 0)
	rep.SetGen(4, []string{"a"}, nil, "", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := reduce(ctx, rep, step, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(v, want) {
		t.Fatalf("reduced %v, want %v", v, want)
	}
}
