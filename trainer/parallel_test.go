package trainer

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/schedule"
)

// memCluster reduces in memory between replicas running in lockstep:
// replica r of those that compute gets the micro-shards assigned to it.
type memCluster struct {
	shards  int
	assign  [][]int // micro-shards per replica (empty: computes none)
	mu      sync.Mutex
	cond    *sync.Cond
	step    int64
	sum     []int64
	arrived int
	done    []float32
	taken   int
}

func newMemCluster(shards int, assign [][]int) *memCluster {
	c := &memCluster{shards: shards, assign: assign, step: -1}
	c.cond = sync.NewCond(&c.mu)
	return c
}

type memReplica struct {
	c *memCluster
	r int
}

func (m memReplica) MicroShards() int { return m.c.shards }

func (m memReplica) Reduce(_ context.Context, step int64, n int, compute func([]int, []int64) error) ([]float32, error) {
	into := make([]int64, n)
	if len(m.c.assign[m.r]) > 0 {
		// Several calls, as a re-plan would make them.
		for _, k := range m.c.assign[m.r] {
			if err := compute([]int{k}, into); err != nil {
				return nil, err
			}
		}
	}
	c := m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.done != nil { // the previous step's result is still being taken
		c.cond.Wait()
	}
	if c.step != step {
		c.step, c.sum, c.arrived = step, make([]int64, n), 0
	}
	for i, v := range into {
		c.sum[i] += v
	}
	c.arrived++
	if c.arrived == len(c.assign) {
		c.done = make([]float32, n)
		for i, v := range c.sum {
			c.done[i] = FromFixed(v)
		}
		c.taken = 0
		c.cond.Broadcast()
	}
	for c.done == nil || c.step != step {
		c.cond.Wait()
	}
	out := slices.Clone(c.done)
	if c.taken++; c.taken == len(c.assign) {
		c.done, c.step = nil, -1
		c.cond.Broadcast()
	}
	return out, nil
}

// parallelRun trains a small MLP with dropout, a pruning schedule and
// quantization with an activation observer, as the replicas of assign, and
// returns each replica's parameters.
func parallelRun(t *testing.T, assign [][]int) [][][]float32 {
	t.Helper()
	train, val := synthetic(256, 1), synthetic(100, 2)
	c := newMemCluster(4, assign)
	out := make([][][]float32, len(assign))
	errs := make([]error, len(assign))
	var wg sync.WaitGroup
	for r := range assign {
		m, err := model.New(model.Spec{Arch: "mlp", Hidden: []int{32}, Dropout: 0.2}, model.MNISTInput, 7)
		if err != nil {
			t.Fatal(err)
		}
		m.Quant = map[string]*compress.QuantControl{"fc1": {Spec: compress.QuantSpec{Bits: 6}}, "fc2": {Spec: compress.QuantSpec{Bits: 6}}}
		m.ActQuant = map[string]*compress.Observer{"fc1": {Spec: compress.QuantSpec{Bits: 8}, Momentum: 0.9}}
		o, err := NewOptimizer(OptimConfig{Kind: "sgd", Momentum: 0.9}, sizes(m))
		if err != nil {
			t.Fatal(err)
		}
		sched := schedule.Sparsity{Kind: "agp", Initial: 0, Final: 0.6, Start: 64, End: 512, Every: 64}
		policies := []Policy{
			&LRPolicy{Schedule: schedule.LR{Kind: "constant", Base: 0.05, Total: 1}},
			&PrunePolicy{Layers: []string{"fc1"}, Schedule: sched, Granularity: compress.Element},
			&QuantPolicy{Layers: []string{"fc1", "fc2"}, Steps: []QuantStep{{Start: 128, Bits: 6}}, Observers: []string{"fc1"}},
		}
		tr, err := New(Config{Model: m, Engine: cpu.New(cpu.Options{Threads: 1}), Train: train, Val: val,
			Batch: 32, EvalBatch: 50, Epochs: 3, Seed: 5, Optimizer: o, Augment: data.Augment{Shift: 1},
			Policies: policies, Parallel: memReplica{c, r}})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			defer tr.Close()
			if _, errs[r] = tr.Run(context.Background()); errs[r] == nil {
				for _, p := range m.Params {
					out[r] = append(out[r], slices.Clone(p.Data()))
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
	return out
}

func TestParallelReplicasMatchWhoeverComputes(t *testing.T) {
	one := parallelRun(t, [][]int{{0, 1, 2, 3}})
	// Two computing replicas and one that computes nothing (a coordinator).
	three := parallelRun(t, [][]int{{3, 1}, {}, {2, 0}})
	for r, ps := range three {
		for i := range ps {
			if !slices.Equal(ps[i], one[0][i]) {
				t.Fatalf("replica %d, parameter %d differs from the single replica's", r, i)
			}
		}
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
