package trainer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/schedule"
)

// memCluster reduces in memory between replicas running in lockstep:
// replica r of those that compute gets the micro-shards assigned to it and
// owns a chunk of the vector, whose update it computes; a replica that
// computes none takes the plain sum (a coordinator) and serves the
// optimizer state. With rotate the chunks change owners every step, so
// that every owner fetches the state of its chunk from that replica.
type memCluster struct {
	shards  int
	plain   bool    // the replicas' model without quantization: its weights' gradients are kept in slots
	exact   bool    // the replicas compute with the exact GEMM, replica r on 1 + r%2 threads
	failed  error   // a replica's run ended in an error: the others stop waiting
	arch    string  // the replicas' model ("": an MLP with dropout)
	assign  [][]int // micro-shards per replica (empty: computes none)
	rotate  bool
	mu      sync.Mutex
	cond    *sync.Cond
	step    int64
	sum     []int64
	arrived int
	done    []float32 // the step's sum, once every replica added its part
	upd     []float32 // the owners' updated chunks
	owned   int
	moments func(lo, hi int) []float32
	fetched int
	taken   int
	// Following: the replica that computes none skips the steps between
	// sync points; the others offer their state there.
	syncEvery int
	offers    map[int64]*SyncState
	offered   map[int64]int
	reduced   []int // Reduce calls per replica
	takes     int
	dropChunk bool // Take leaves a chunk's optimizer state out
}

// wait waits for a change, with c.mu held, and says whether a replica
// has failed since: a test whose replica fails then fails instead of
// hanging with the others.
func (c *memCluster) wait() error {
	if c.failed == nil {
		c.cond.Wait()
	}
	return c.failed
}

// fail records replica r's error and wakes the replicas that wait.
func (c *memCluster) fail(r int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed == nil {
		c.failed = fmt.Errorf("replica %d failed: %w", r, err)
	}
	c.cond.Broadcast()
}

func newMemCluster(shards int, assign [][]int) *memCluster {
	c := &memCluster{shards: shards, assign: assign, step: -1, offers: map[int64]*SyncState{}, offered: map[int64]int{}, reduced: make([]int, len(assign))}
	c.cond = sync.NewCond(&c.mu)
	return c
}

type memReplica struct {
	c *memCluster
	r int
}

func (m memReplica) MicroShards() int { return m.c.shards }

// owners is the number of replicas that compute, and rank r's position
// among them at step (-1: computes none).
func (c *memCluster) owner(r int, step int64) (int, int) {
	n, pos := 0, -1
	for k, a := range c.assign {
		if len(a) > 0 {
			if k == r {
				pos = n
			}
			n++
		}
	}
	if pos >= 0 && c.rotate {
		pos = (pos + int(step)) % n
	}
	return n, pos
}

func (m memReplica) Reduce(ctx context.Context, step int64, n int, f Step) ([]float32, bool, error) {
	into := make([]int64, n)
	for i := range into {
		into[i] = int64(i)*7919 - 1 // not zeroed: the first call puts its sum in place
	}
	if len(m.c.assign[m.r]) == 0 {
		if err := f.Compute(nil, into, true, nil); err != nil {
			return nil, false, err
		}
	}
	single, err := m.single(step, f, into)
	if err != nil {
		return nil, false, err
	}
	// On odd steps one call a micro-shard, as a re-plan would make them;
	// on even steps one call with them all (the runs' gradients kept aside
	// and summed in one pass).
	ks := m.c.assign[m.r]
	for j := 0; j < len(ks) && !single; j++ {
		call := ks[j : j+1]
		var fin *finishLog
		if step%2 == 0 {
			call, j = ks, len(ks)
			m.c.mu.Lock()
			owners, pos := m.c.owner(m.r, step)
			m.c.mu.Unlock()
			fin = &finishLog{into: into, lo: pos * n / owners, hi: (pos + 1) * n / owners}
		}
		if err := f.Compute(call, into, j == 0 || step%2 == 0, fin.finishing()); err != nil {
			return nil, false, err
		}
		if err := fin.check(); err != nil {
			return nil, false, fmt.Errorf("step %d: %w", step, err)
		}
	}
	c := m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.done != nil { // the previous step's result is still being taken
		if err := c.wait(); err != nil {
			return nil, false, err
		}
	}
	if c.step != step {
		c.step, c.sum, c.arrived, c.owned = step, make([]int64, n), 0, 0
	}
	for i, v := range into {
		c.sum[i] += v
	}
	owners, pos := c.owner(m.r, step)
	if pos < 0 {
		c.moments = f.Moments
	}
	c.reduced[m.r]++
	c.arrived++
	if c.arrived == c.reducers() {
		c.done = make([]float32, n)
		for i, v := range c.sum {
			c.done[i] = FromFixed(v)
		}
		c.upd = slices.Clone(c.done)
		c.taken = 0
		c.cond.Broadcast()
	}
	for c.done == nil || c.step != step {
		if err := c.wait(); err != nil {
			return nil, false, err
		}
	}
	if pos >= 0 {
		lo, hi := pos*n/owners, (pos+1)*n/owners
		chunk := slices.Clone(c.done[lo:hi])
		c.mu.Unlock()
		err := updateInParts(ctx, f, lo, chunk)
		c.mu.Lock()
		if err != nil {
			return nil, false, err
		}
		copy(c.upd[lo:hi], chunk)
		c.owned++
		c.cond.Broadcast()
	}
	for c.owned < owners {
		if err := c.wait(); err != nil {
			return nil, false, err
		}
	}
	out := slices.Clone(c.done)
	if pos >= 0 {
		out = slices.Clone(c.upd)
	}
	if c.taken++; c.taken == c.reducers() {
		c.done, c.step, c.moments = nil, -1, nil
		c.cond.Broadcast()
	}
	return out, pos >= 0, nil
}

// finishLog records the ranges a Compute call reports finished, and a
// copy of each as it was then.
type finishLog struct {
	into   []int64
	lo, hi int // the replica's own chunk
	done   [][2]int
	snaps  [][]int64
}

// finishes counts the ranges finishLogs were given.
var finishes atomic.Int64

func (f *finishLog) finishing() *Finishing {
	if f == nil {
		return nil
	}
	return &Finishing{Lo: f.lo, Hi: f.hi, Done: func(a, b int) {
		f.done = append(f.done, [2]int{a, b})
		f.snaps = append(f.snaps, slices.Clone(f.into[a:b]))
		finishes.Add(1)
	}}
}

// check says whether the ranges reported hold their final values, do
// not overlap, cover the vector, and finish the own chunk last: no range
// inside it comes before one outside it, and the ranges outside it take
// few of its elements (whole rows of four at its two edges).
func (f *finishLog) check() error {
	if f == nil {
		return nil
	}
	covered := make([]bool, len(f.into))
	inside, early := false, 0
	for i, r := range f.done {
		if !slices.Equal(f.snaps[i], f.into[r[0]:r[1]]) {
			return fmt.Errorf("range [%d, %d) reported finished changed afterwards", r[0], r[1])
		}
		for e := r[0]; e < r[1]; e++ {
			if covered[e] {
				return fmt.Errorf("element %d reported finished twice", e)
			}
			covered[e] = true
		}
		within := r[0] >= f.lo && r[1] <= f.hi
		if inside && !within {
			return fmt.Errorf("range [%d, %d) outside the own chunk [%d, %d) reported after one inside it", r[0], r[1], f.lo, f.hi)
		}
		inside = inside || within
		if !within {
			early += max(0, min(r[1], f.hi)-max(r[0], f.lo))
		}
	}
	if e := slices.Index(covered, false); e >= 0 {
		return fmt.Errorf("element %d of %d never reported finished", e, len(covered))
	}
	if early > 2*4*28*28 { // four rows of the widest layer at each edge
		return fmt.Errorf("%d elements of the own chunk [%d, %d) finished with the others'", early, f.lo, f.hi)
	}
	return nil
}

// singles counts the steps memReplica computed with Step.Single.
var singles atomic.Int64

// single computes a replica's one micro-shard with f.Single, as a
// cluster's replica does, and converts its float32 segments as their
// owners would.
func (m memReplica) single(step int64, f Step, into []int64) (bool, error) {
	a := m.c.assign[m.r]
	if len(a) != 1 || f.Single == nil {
		return false, nil
	}
	segs, err := f.Single(a[0])
	if err != nil || segs == nil {
		return false, err
	}
	at := 0
	for _, s := range segs {
		for i, v := range s {
			q, ok := ToFixed(v)
			if !ok {
				return false, fmt.Errorf("segment value %v at %d: Single did not check it", v, at+i)
			}
			into[at+i] = q
		}
		at += len(s)
	}
	if at != len(into) {
		return false, fmt.Errorf("segments of %d values, want %d", at, len(into))
	}
	singles.Add(1)
	return true, nil
}

// updateInParts updates the chunk at lo with f.Update: in three parts,
// the last first (parts come in any order, each as it is reduced), into
// buffers of NaNs that must come back whole, or in place when the step
// asks for the whole chunk.
func updateInParts(ctx context.Context, f Step, lo int, chunk []float32) error {
	part, err := f.Update(ctx, lo, lo+len(chunk))
	if err != nil || f.WholeUpdate {
		if err == nil {
			err = part(lo, chunk, chunk)
		}
		return err
	}
	each := max(1, len(chunk)/3)
	for a := (len(chunk) - 1) / each * each; a >= 0; a -= each {
		grad := chunk[a:min(a+each, len(chunk))]
		into := make([]float32, len(grad))
		for i := range into {
			into[i] = float32(math.NaN())
		}
		if err := part(lo+a, grad, into); err != nil {
			return err
		}
		if i := slices.IndexFunc(into, func(v float32) bool { return v != v }); i >= 0 {
			return fmt.Errorf("the update of [%d, %d) left element %d unwritten", lo+a, lo+a+len(grad), lo+a+i)
		}
		copy(grad, into)
	}
	return nil
}

// reducers is the number of replicas that take every step: all but the
// one that computes none when it follows.
func (c *memCluster) reducers() int {
	if c.syncEvery == 0 {
		return len(c.assign)
	}
	owners, _ := c.owner(0, 0)
	return owners
}

func (m memReplica) SyncEvery() int { return m.c.syncEvery }
func (m memReplica) Follows() bool  { return len(m.c.assign[m.r]) == 0 }

// Offer implements Follower: the snapshot kept is that of a replica that
// changes from one sync point to the next (any replica's will do), a copy.
func (m memReplica) Offer(_ context.Context, st *SyncState) error {
	c := m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	sn := st.Snapshot
	o := c.offers[sn.Step]
	if o == nil {
		o = &SyncState{}
		c.offers[sn.Step] = o
	}
	owners, pos := c.owner(m.r, sn.Step)
	if int(sn.Step/int64(c.syncEvery))%owners == pos {
		cp := *sn
		cp.Params, cp.Masks, cp.History = nil, nil, slices.Clone(sn.History)
		for _, p := range sn.Params {
			cp.Params = append(cp.Params, slices.Clone(p))
		}
		for _, b := range sn.Masks {
			cp.Masks = append(cp.Masks, slices.Clone(b))
		}
		o.Snapshot, o.LR = &cp, st.LR
	}
	for _, ch := range st.Chunks {
		o.Chunks = append(o.Chunks, ChunkState{ch.Lo, ch.Hi, slices.Clone(ch.Moments)})
	}
	c.offered[sn.Step]++
	c.cond.Broadcast()
	return nil
}

// Take implements Follower.
func (m memReplica) Take(_ context.Context, step int64, _ int, _ Step) (*SyncState, error) {
	c := m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.offered[step] < c.reducers() {
		if err := c.wait(); err != nil {
			return nil, err
		}
	}
	c.takes++
	st := c.offers[step]
	if c.dropChunk { // an owner's state did not come
		cp := *st
		cp.Chunks = cp.Chunks[1:]
		return &cp, nil
	}
	return st, nil
}

// FetchMoments implements MomentSource: the replica that computes none
// is blocked in its Reduce of step until every owner has updated.
func (m memReplica) FetchMoments(_ context.Context, step int64, lo, hi int) ([]float32, error) {
	c := m.c
	c.mu.Lock()
	for c.moments == nil || c.step != step {
		if err := c.wait(); err != nil {
			c.mu.Unlock()
			return nil, err
		}
	}
	fn := c.moments
	c.fetched++
	c.mu.Unlock()
	return fn(lo, hi), nil
}

// parallelRun trains a small MLP with dropout, a pruning schedule and
// quantization with an activation observer, as the replicas of assign, and
// returns each replica's parameters.
func parallelRun(t *testing.T, assign [][]int, rotate bool, opt OptimConfig) [][][]float32 {
	out, _ := parallelRunState(t, assign, rotate, opt)
	return out
}

// parallelRunState is parallelRun that also returns how many optimizer
// state values each replica held at the end.
func parallelRunState(t *testing.T, assign [][]int, rotate bool, opt OptimConfig) ([][][]float32, []int) {
	out := parallelRunWith(t, newMemCluster(4, assign), rotate, opt, 0)
	return out.params, out.held
}

// parallelOut is what each replica of a parallel run ends with.
type parallelOut struct {
	params [][][]float32
	held   []int
	state  [][][]float32 // the optimizer's state
	res    []*Result
	ckpts  []map[int64]*Snapshot // copies of the checkpoints written, by step
}

// parallelRunWith is parallelRun on cluster c, its replicas writing a
// checkpoint every ckptSteps steps (0: none).
func parallelRunWith(t *testing.T, c *memCluster, rotate bool, opt OptimConfig, ckptSteps int) parallelOut {
	t.Helper()
	assign := c.assign
	train, val := synthetic(256, 1), synthetic(100, 2)
	c.rotate = rotate
	n := len(assign)
	out := parallelOut{params: make([][][]float32, n), held: make([]int, n), state: make([][][]float32, n),
		res: make([]*Result, n), ckpts: make([]map[int64]*Snapshot, n)}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := range assign {
		spec := model.Spec{Arch: "mlp", Hidden: []int{32}, Dropout: 0.2}
		if c.arch != "" {
			spec = model.Spec{Arch: c.arch}
		}
		m, err := model.New(spec, model.MNISTInput, 7)
		if err != nil {
			t.Fatal(err)
		}
		if !c.plain {
			m.Quant = map[string]*model.QuantControl{"fc1": {Spec: model.QuantSpec{Bits: 6}}, "fc2": {Spec: model.QuantSpec{Bits: 6}}}
			m.ActQuant = map[string]*model.Observer{"fc1": {Spec: model.QuantSpec{Bits: 8}, Momentum: 0.9}}
		}
		o, err := NewOptimizer(opt, sizes(m))
		if err != nil {
			t.Fatal(err)
		}
		sched := schedule.Sparsity{Kind: "agp", Initial: 0, Final: 0.6, Start: 64, End: 512, Every: 64}
		policies := []Policy{
			&LRPolicy{Schedule: schedule.LR{Kind: "cosine", Base: 0.05, Total: 1024}},
			&PrunePolicy{Layers: []string{"fc1"}, Schedule: sched, Granularity: compress.Element},
		}
		if !c.plain {
			policies = append(policies, &QuantPolicy{Layers: []string{"fc1", "fc2"}, Steps: []QuantStep{{Start: 128, Bits: 6}}, Observers: []string{"fc1"}})
		}
		eng := cpu.New(cpu.Options{Threads: 1})
		if c.exact {
			eng = cpu.New(cpu.Options{Threads: 1 + r%2, Exact: true})
		}
		cfg := Config{Model: m, Engine: eng, Train: train, Val: val,
			Batch: 32, EvalBatch: 50, Epochs: 3, Seed: 5, Optimizer: o, Augment: data.Augment{Shift: 1},
			Policies: policies, Parallel: memReplica{c, r}}
		if ckptSteps > 0 {
			out.ckpts[r] = map[int64]*Snapshot{}
			cfg.CheckpointSteps = ckptSteps
			cfg.Checkpoint = func(sn *Snapshot) error {
				cp := *sn
				cp.Params, cp.Optimizer = nil, nil
				for _, p := range sn.Params {
					cp.Params = append(cp.Params, slices.Clone(p))
				}
				for _, p := range sn.Optimizer {
					cp.Optimizer = append(cp.Optimizer, slices.Clone(p))
				}
				out.ckpts[r][sn.Step] = &cp
				return nil
			}
		}
		tr, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			defer tr.Close()
			if out.res[r], errs[r] = tr.Run(context.Background()); errs[r] != nil {
				c.fail(r, errs[r])
			} else {
				for _, p := range m.Params {
					out.params[r] = append(out.params[r], slices.Clone(p.Data()))
				}
				out.held[r] = tr.optimizerValues()
				for _, b := range tr.cfg.Optimizer.State() {
					out.state[r] = append(out.state[r], slices.Clone(b))
				}
			}
		}(r)
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", r, err)
		}
	}
	if rotate && c.fetched == 0 {
		t.Fatal("no owner fetched its chunk's optimizer state")
	}
	return out
}

func TestParallelReplicasMatchWhoeverComputes(t *testing.T) {
	sgd := OptimConfig{Kind: "sgd", Momentum: 0.9}
	one := parallelRun(t, [][]int{{0, 1, 2, 3}}, false, sgd)
	// Two computing replicas, each updating its chunk, and one that
	// computes nothing (a coordinator) and applies the whole update; then
	// three owners whose chunks move every step, so that each fetches its
	// chunk's optimizer state from the coordinator.
	for _, run := range []struct {
		assign [][]int
		rotate bool
	}{{[][]int{{3, 1}, {}, {2, 0}}, false}, {[][]int{{3}, {1, 0}, {}, {2}}, true}} {
		got, held := parallelRunState(t, run.assign, run.rotate, sgd)
		// SGD with momentum: one value per parameter. The coordinator
		// holds them all, each owner its chunk's, twice (the state and the
		// spare copy the next update is computed in): its share of the
		// vector, which ends in a few values that are not parameters
		// (observer ranges, losses).
		total := 0
		for _, p := range got[0] {
			total += len(p)
		}
		for r, a := range run.assign {
			owners := 0
			for _, b := range run.assign {
				if len(b) > 0 {
					owners++
				}
			}
			if len(a) == 0 && held[r] != total || len(a) > 0 && (held[r] == 0 || held[r] > 2*(total/owners+16)) {
				t.Fatalf("%v: replica %d holds %d optimizer values of %d", run.assign, r, held[r], total)
			}
		}
		for r, ps := range got {
			for i := range ps {
				if !slices.Equal(ps[i], one[0][i]) {
					t.Fatalf("%v (rotating %v): replica %d, parameter %d differs from the single replica's", run.assign, run.rotate, r, i)
				}
			}
		}
	}
	// Without quantization the weights' gradients come straight from the
	// linear layers' ops, which keep each run's in a slot of its own: a
	// replica computing several micro-shards in one call sums them from
	// there (the biases' are copied aside).
	// So do a convolution's (LeNet-5).
	// With the exact GEMM (a cluster's engine) the replicas may also
	// differ in thread count: 1 + r%2 here.
	for _, c := range []struct {
		arch  string
		exact bool
	}{{"", false}, {"lenet5", false}, {"", true}, {"lenet5", true}} {
		plain := func(assign [][]int) [][][]float32 {
			mc := newMemCluster(4, assign)
			mc.plain, mc.arch, mc.exact = true, c.arch, c.exact
			return parallelRunWith(t, mc, false, sgd, 0).params
		}
		onePlain := plain([][]int{{0, 1, 2, 3}})
		for _, assign := range [][][]int{{{0}, {1}, {2}, {3}}, {{3, 1}, {2, 0}}} {
			for r, ps := range plain(assign) {
				for i := range ps {
					if !slices.Equal(ps[i], onePlain[0][i]) {
						t.Fatalf("%q without quantization (exact GEMM %v), %v: replica %d, parameter %d differs from the single replica's", c.arch, c.exact, assign, r, i)
					}
				}
			}
		}
	}
	// Adam: two state buffers per tensor and a step count for the bias
	// correction, moved with the chunks.
	adam := OptimConfig{Kind: "adamw", WeightDecay: 0.01}
	oneAdam := parallelRun(t, [][]int{{0, 1, 2, 3}}, false, adam)
	for r, ps := range parallelRun(t, [][]int{{3}, {1, 0}, {}, {2}}, true, adam) {
		for i := range ps {
			if !slices.Equal(ps[i], oneAdam[0][i]) {
				t.Fatalf("adam, rotating: replica %d, parameter %d differs from the single replica's", r, i)
			}
		}
	}
	if slices.Equal(oneAdam[0][0], one[0][0]) {
		t.Fatal("adam and sgd trained the same weights")
	}
	if singles.Load() == 0 {
		t.Fatal("no replica computed its one micro-shard with Step.Single")
	}
	if finishes.Load() == 0 {
		t.Fatal("no Compute reported a range finished")
	}
	var zeros int
	for _, v := range one[0][0] {
		if v == 0 {
			zeros++
		}
	}
	if zeros < len(one[0][0])/2 {
		t.Fatalf("pruning did not run: %d zeros of %d", zeros, len(one[0][0]))
	}
}

func TestFixedPointRefusesNonFinite(t *testing.T) {
	into := make([]int64, 2)
	if err := AddFixed(into, []float32{1, float32(FixedLimit)}); err == nil {
		t.Fatal("a value at the limit was accepted")
	}
	if q, ok := ToFixed(-0.5); !ok || FromFixed(q) != -0.5 {
		t.Fatalf("ToFixed(-0.5) = %d, %v", q, ok)
	}
}

// TestDivideIsDivision: the reciprocal's product that divide uses for a
// power of two gives a division's bits, subnormal and huge values too.
func TestDivideIsDivision(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	src := []float32{0, -0, 1, -1, math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, 3e-38, -1.17549435e-38}
	for range 100000 {
		src = append(src, math.Float32frombits(rng.Uint32()&^(0xff<<23)|uint32(rng.IntN(255))<<23))
	}
	for _, d := range []float32{1, 2, 3, 4, 6, 8, 16, 64, 1024} {
		dst := make([]float32, len(src))
		divide(dst, src, d)
		for i, q := range src {
			if want := q / d; math.Float32bits(dst[i]) != math.Float32bits(want) {
				t.Fatalf("%v / %v: %v (bits %#x), want %v (bits %#x)", q, d, dst[i], math.Float32bits(dst[i]), want, math.Float32bits(want))
			}
		}
	}
}

// A coordinator that follows — it skips the steps between sync points and
// takes the computing replicas' state at each — ends every epoch, every
// checkpoint and the run with the state of one that reduces every step:
// parameters, optimizer state, the epochs' metrics.
func TestFollowerTakesTheSameState(t *testing.T) {
	for _, opt := range []OptimConfig{{Kind: "sgd", Momentum: 0.9, Nesterov: true}, {Kind: "adamw", WeightDecay: 0.01}} {
		t.Run(opt.Kind, func(t *testing.T) { followerTakesTheSameState(t, opt) })
	}
}

func followerTakesTheSameState(t *testing.T, opt OptimConfig) {
	assign := [][]int{{3, 1}, {}, {2, 0}}
	full := parallelRunWith(t, newMemCluster(4, assign), false, opt, 5)
	c := newMemCluster(4, assign)
	c.syncEvery = 3 // 8 steps an epoch: sync points fall inside epochs and at their ends
	got := parallelRunWith(t, c, false, opt, 5)
	const coord = 1
	if c.reduced[coord] != 0 || c.reduced[0] != 24 || c.takes == 0 || c.takes >= 24 {
		t.Fatalf("the follower reduced %d steps and took %d states (the others reduced %d)", c.reduced[coord], c.takes, c.reduced[0])
	}
	// Sync points: every 3 steps, each epoch's end (8, 16, 24), each
	// checkpoint step (5, 10, 15, 20).
	if want := 13; c.takes != want {
		t.Fatalf("the follower took the state %d times, want %d", c.takes, want)
	}
	for i := range full.params[coord] {
		if !slices.Equal(got.params[coord][i], full.params[coord][i]) {
			t.Fatalf("parameter %d differs from the reducing coordinator's", i)
		}
	}
	if len(got.state[coord]) == 0 || len(got.state[coord]) != len(full.state[coord]) {
		t.Fatalf("optimizer state of %d buffers, want %d", len(got.state[coord]), len(full.state[coord]))
	}
	for i := range full.state[coord] {
		if !slices.Equal(got.state[coord][i], full.state[coord][i]) {
			t.Fatalf("optimizer buffer %d differs from the reducing coordinator's", i)
		}
	}
	ge, fe := got.res[coord].Epochs, full.res[coord].Epochs
	if len(ge) != 3 || len(fe) != 3 {
		t.Fatalf("%d and %d epochs", len(ge), len(fe))
	}
	for i := range fe {
		g, f := ge[i], fe[i]
		if g.TrainLoss != f.TrainLoss || g.TrainAccuracy != f.TrainAccuracy || g.ValAccuracy != f.ValAccuracy ||
			g.ValLoss != f.ValLoss || g.LR != f.LR || g.Sparsity != f.Sparsity || g.Steps != f.Steps {
			t.Fatalf("epoch %d: following %+v, reducing %+v", i+1, g, f)
		}
	}
	if fe[2].Sparsity == 0 || fe[0].LR == fe[2].LR {
		t.Fatalf("nothing to take: sparsity %v, LR %v then %v", fe[2].Sparsity, fe[0].LR, fe[2].LR)
	}
	if len(full.ckpts[coord]) != 4 || len(got.ckpts[coord]) != 4 {
		t.Fatalf("%d and %d checkpoints, want 4", len(got.ckpts[coord]), len(full.ckpts[coord]))
	}
	for step, f := range full.ckpts[coord] {
		g := got.ckpts[coord][step]
		if g == nil {
			t.Fatalf("no checkpoint at step %d", step)
		}
		for i := range f.Params {
			if !slices.Equal(g.Params[i], f.Params[i]) {
				t.Fatalf("checkpoint at step %d: parameter %d differs", step, i)
			}
		}
		for i := range f.Optimizer {
			if !slices.Equal(g.Optimizer[i], f.Optimizer[i]) {
				t.Fatalf("checkpoint at step %d: optimizer buffer %d differs", step, i)
			}
		}
		if g.LossSum != f.LossSum || g.Correct != f.Correct || g.StepInEpoch != f.StepInEpoch || string(g.Policies[1]) != string(f.Policies[1]) {
			t.Fatalf("checkpoint at step %d: following %+v, reducing %+v", step, g, f)
		}
	}
}

// A follower refuses a state whose chunks do not cover the vector (an
// owner's optimizer state missing), before it changes anything.
func TestFollowerRefusesAnIncompleteState(t *testing.T) {
	c := newMemCluster(4, [][]int{{3, 1}, {}, {2, 0}})
	c.syncEvery, c.dropChunk = 3, true
	train := synthetic(256, 1)
	m, o := smallMomentumMLP(t)
	before := slices.Clone(m.Params[0].Data())
	tr, err := New(Config{Model: m, Engine: cpu.New(cpu.Options{Threads: 1}), Train: train, Batch: 32, Epochs: 1, Seed: 5,
		Optimizer: o, Policies: []Policy{&LRPolicy{Schedule: schedule.LR{Kind: "constant", Base: 0.05, Total: 1}}}, Parallel: memReplica{c, 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	// The computing replicas are not run: the follower's Take is answered
	// from offers made here, a copy of its own state at step 3.
	offerOwnState(t, tr, c, 0)
	_, err = tr.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "step 3: optimizer state of [") || !strings.Contains(err.Error(), "is due") {
		t.Fatalf("a state without a chunk's optimizer state: %v", err)
	}
	if !slices.Equal(m.Params[0].Data(), before) {
		t.Fatal("the parameters changed")
	}
}

// smallMomentumMLP is the follower tests' model (an MLP of 32 hidden
// units) and its optimizer (SGD with momentum).
func smallMomentumMLP(t *testing.T) (*model.Model, Optimizer) {
	t.Helper()
	m, err := model.New(model.Spec{Arch: "mlp", Hidden: []int{32}}, model.MNISTInput, 7)
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOptimizer(OptimConfig{Kind: "sgd", Momentum: 0.9}, sizes(m))
	if err != nil {
		t.Fatal(err)
	}
	return m, o
}

// sharingReplica is a follower whose first Take asks for its state to be
// shared first (a restart planned from it), as a cluster's does after a
// membership change.
type sharingReplica struct {
	memReplica
	shared *[]int64 // the steps ShareState was called at
	takes  *int
}

var errStopped = errors.New("stopped")

func (s sharingReplica) JoinAt(step int64) bool {
	return *s.takes > 0 && len(*s.shared) == 0 && step == 0
}

func (s sharingReplica) Take(ctx context.Context, step int64, n int, f Step) (*SyncState, error) {
	*s.takes++
	switch {
	case len(*s.shared) == 0:
		return nil, ErrShareFirst
	case step > 3:
		return nil, errStopped
	}
	return s.memReplica.Take(ctx, step, n, f)
}

// TestFollowerSharesFirstWhenAsked: a Take that returns ErrShareFirst
// makes the follower hand its present state to ShareState, then take
// the same sync point again.
func TestFollowerSharesFirstWhenAsked(t *testing.T) {
	c := newMemCluster(4, [][]int{{3, 1}, {}, {2, 0}})
	c.syncEvery = 3
	m, o := smallMomentumMLP(t)
	var shared []int64
	takes := 0
	tr, err := New(Config{Model: m, Engine: cpu.New(cpu.Options{Threads: 1}), Train: synthetic(256, 1), Batch: 32, Epochs: 1, Seed: 5,
		Optimizer: o, Policies: []Policy{&LRPolicy{Schedule: schedule.LR{Kind: "constant", Base: 0.05, Total: 1}}},
		Parallel:   sharingReplica{memReplica{c, 1}, &shared, &takes},
		ShareState: func(sn *Snapshot) error { shared = append(shared, sn.Step); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	offerOwnState(t, tr, c, 0.05)
	_, err = tr.Run(context.Background())
	if !errors.Is(err, errStopped) {
		t.Fatalf("the run ended with %v, want the stop at the second sync point", err)
	}
	if !slices.Equal(shared, []int64{0}) || takes != 3 || tr.state.Step != 3 {
		t.Fatalf("shared at %v, %d takes, at step %d; want shared at step 0, 3 takes (asked to share, the state at 3, the stop), step 3", shared, takes, tr.state.Step)
	}
}

// offerOwnState makes c's offers at step 3 — as two owners' — a copy of
// the follower tr's own state, for a follower run without the computing
// replicas.
func offerOwnState(t *testing.T, tr *Trainer, c *memCluster, lr float64) {
	t.Helper()
	sn, err := tr.snapshot(0, 3, &Result{}, running{})
	if err != nil {
		t.Fatal(err)
	}
	sn.Step = 3
	n := tr.layout().n
	c.offers[3] = &SyncState{Snapshot: sn, LR: lr, Chunks: []ChunkState{{0, n / 2, tr.moments(0, n/2)}, {n / 2, n, tr.moments(n/2, n)}}}
	c.offered[3] = 2
}
