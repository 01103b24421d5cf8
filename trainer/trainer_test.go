package trainer

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/distill"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/schedule"
)

// synthetic returns a learnable 28x28 set: class c lights up a band of rows.
func synthetic(n int, seed uint64) *data.Set {
	r := rand.New(rand.NewPCG(seed, 1))
	s := &data.Set{Name: "synthetic", Rows: 28, Cols: 28, Classes: 10, Images: make([]byte, n*784), Labels: make([]byte, n)}
	for i := 0; i < n; i++ {
		c := r.IntN(10)
		s.Labels[i] = byte(c)
		img := s.Images[i*784 : (i+1)*784]
		for j := range img {
			img[j] = byte(r.IntN(60))
		}
		for row := 2 * c; row < 2*c+4; row++ {
			for col := 4; col < 24; col++ {
				img[row*28+col] = 200 + byte(r.IntN(50))
			}
		}
	}
	return s
}

func run(t *testing.T, spec model.Spec, opt OptimConfig, epochs int, seed uint64, train, val *data.Set, policies ...Policy) (*model.Model, *Result) {
	t.Helper()
	m, err := model.New(spec, model.MNISTInput, seed)
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOptimizer(opt, sizes(m))
	if err != nil {
		t.Fatal(err)
	}
	batch := 32
	total := int64(data.Steps(train.Len(), batch) * batch * epochs)
	lr := &LRPolicy{Schedule: schedule.LR{Kind: "cosine", Base: 0.05, Total: total}}
	tr, err := New(Config{Model: m, Engine: cpu.New(cpu.Options{Threads: 2}), Train: train, Val: val, Test: val,
		Batch: batch, EvalBatch: 100, Epochs: epochs, Seed: seed, Optimizer: o,
		Augment: data.Augment{Shift: 1}, Policies: append([]Policy{lr}, policies...)})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	res, err := tr.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return m, res
}

func sizes(m *model.Model) []int {
	var s []int
	for _, p := range m.Params {
		s = append(s, p.Size())
	}
	return s
}

func TestTrainingLearnsAndIsDeterministic(t *testing.T) {
	train, val := synthetic(640, 1), synthetic(200, 2)
	for _, tc := range []struct {
		name string
		spec model.Spec
		opt  OptimConfig
	}{
		{"mlp-momentum", model.Spec{Arch: "mlp", Hidden: []int{64}, Dropout: 0.2}, OptimConfig{Kind: "sgd", Momentum: 0.9}},
		{"mlp-nesterov", model.Spec{Arch: "mlp", Hidden: []int{64}}, OptimConfig{Kind: "sgd", Momentum: 0.9, Nesterov: true, WeightDecay: 1e-4}},
		{"mlp-adamw", model.Spec{Arch: "mlp", Hidden: []int{64}}, OptimConfig{Kind: "adamw", WeightDecay: 0.01}},
		{"lenet5-sgd", model.Spec{Arch: "lenet5"}, OptimConfig{Kind: "sgd", Momentum: 0.9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opt.Kind == "adamw" {
				tc.opt.Kind = "adamw" // lr 0.05 is high for Adam; the cosine still converges on this data
			}
			m1, r1 := run(t, tc.spec, tc.opt, 3, 7, train, val)
			if r1.ValAccuracy < 0.9 {
				t.Fatalf("validation accuracy %.3f after 3 epochs on separable data", r1.ValAccuracy)
			}
			m2, r2 := run(t, tc.spec, tc.opt, 3, 7, train, val)
			for i, p := range m1.Params {
				a, b := p.Data(), m2.Params[i].Data()
				for j := range a {
					if math.Float32bits(a[j]) != math.Float32bits(b[j]) {
						t.Fatalf("%s[%d] differs between two identical runs: %v vs %v", p.Name, j, a[j], b[j])
					}
				}
			}
			if r1.ValAccuracy != r2.ValAccuracy || r1.Steps != r2.Steps || r1.Steps != 3*20 {
				t.Fatalf("results differ: %+v vs %+v", r1, r2)
			}
		})
	}
}

// maskPolicy holds a fixed mask on every weight, through the optimizer's
// mask support.
type maskPolicy struct{ masks [][]byte }

func (p *maskPolicy) Name() string { return "test-mask" }
func (p *maskPolicy) BeforeStep(s *State) error {
	copy(s.Masks, p.masks)
	return nil
}

func TestMaskedWeightsStayZero(t *testing.T) {
	train := synthetic(3200, 3) // 100 steps of 32
	for _, opt := range []OptimConfig{{Kind: "sgd", Momentum: 0.9}, {Kind: "adam"}, {Kind: "adamw", WeightDecay: 0.1}, {Kind: "sgd", Momentum: 0.9, Nesterov: true}} {
		t.Run(opt.Kind, func(t *testing.T) {
			m, _ := model.New(model.Spec{Arch: "mlp", Hidden: []int{32}}, model.MNISTInput, 1)
			r := rand.New(rand.NewPCG(5, 5))
			pol := &maskPolicy{masks: make([][]byte, len(m.Params))}
			for i, p := range m.Params {
				if p.Bias {
					continue
				}
				mk := make([]byte, p.Size())
				for j := range mk {
					if r.Float64() < 0.5 {
						mk[j] = 1
					}
				}
				pol.masks[i] = mk
			}
			o, _ := NewOptimizer(opt, sizes(m))
			tr, err := New(Config{Model: m, Engine: cpu.New(cpu.Options{Threads: 2}), Train: train, Batch: 32, Epochs: 1, Seed: 1,
				Optimizer: o, Policies: []Policy{&LRPolicy{Schedule: schedule.LR{Kind: "constant", Base: 0.01, Total: 1}}, pol}})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			res, err := tr.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if res.Steps != 100 {
				t.Fatalf("%d steps", res.Steps)
			}
			state := o.State()
			for i, p := range m.Params {
				mk := pol.masks[i]
				if mk == nil {
					continue
				}
				moved := false
				for j, keep := range mk {
					if keep == 0 {
						if p.Data()[j] != 0 {
							t.Fatalf("%s[%d] = %v under a zero mask", p.Name, j, p.Data()[j])
						}
						for _, st := range state {
							// every moment buffer of this parameter's size
							if len(st) == len(mk) && st[j] != 0 {
								t.Fatalf("optimizer state for masked %s[%d] = %v", p.Name, j, st[j])
							}
						}
					} else if p.Data()[j] != 0 {
						moved = true
					}
				}
				if !moved {
					t.Fatalf("%s: kept weights are all zero", p.Name)
				}
			}
		})
	}
}

type nanPolicy struct{ at int64 }

func (p *nanPolicy) Name() string { return "nan" }
func (p *nanPolicy) BeforeStep(s *State) error {
	if s.Step == p.at {
		s.Params[0][0] = float32(math.NaN())
	}
	return nil
}

func TestNonFiniteLossStopsWithStep(t *testing.T) {
	train := synthetic(320, 4)
	m, _ := model.New(model.Spec{Arch: "mlp", Hidden: []int{16}}, model.MNISTInput, 1)
	o, _ := NewOptimizer(OptimConfig{Kind: "sgd"}, sizes(m))
	tr, err := New(Config{Model: m, Engine: cpu.New(cpu.Options{}), Train: train, Batch: 32, Epochs: 1, Seed: 1, Optimizer: o,
		Policies: []Policy{&LRPolicy{Schedule: schedule.LR{Kind: "constant", Base: 0.01, Total: 1}}, &nanPolicy{at: 4}}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	_, err = tr.Run(context.Background())
	if !errors.Is(err, ErrNonFinite) {
		t.Fatalf("error %v, want ErrNonFinite", err)
	}
	if want := "at step 5"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name %q", err, want)
	}
}

// TestAllOnesMaskChangesNothing checks that the masked update paths do the
// unmasked arithmetic term for term.
func TestAllOnesMaskChangesNothing(t *testing.T) {
	for _, c := range []OptimConfig{{Kind: "sgd", Momentum: 0.9, WeightDecay: 1e-3}, {Kind: "sgd", Momentum: 0.9, Nesterov: true, WeightDecay: 1e-3},
		{Kind: "sgd", WeightDecay: 1e-3}, {Kind: "adam", WeightDecay: 1e-3}, {Kind: "adamw", WeightDecay: 1e-2}} {
		r := rand.New(rand.NewPCG(1, 1))
		n := 1000
		w1, g := make([]float32, n), make([]float32, n)
		ones := make([]byte, n)
		for i := range w1 {
			w1[i], g[i], ones[i] = float32(r.NormFloat64()), float32(r.NormFloat64()), 1
		}
		w2 := slices.Clone(w1)
		a, _ := NewOptimizer(c, []int{n})
		b, _ := NewOptimizer(c, []int{n})
		for step := 0; step < 5; step++ {
			a.Step([][]float32{w1}, [][]float32{g}, nil, 0.1)
			b.Step([][]float32{w2}, [][]float32{g}, [][]byte{ones}, 0.1)
		}
		for i := range w1 {
			if math.Float32bits(w1[i]) != math.Float32bits(w2[i]) {
				t.Fatalf("%+v: element %d: %v unmasked, %v with an all-ones mask", c, i, w1[i], w2[i])
			}
		}
	}
}

func TestGuardPausesAndUndoesPruning(t *testing.T) {
	m, _ := model.New(model.Spec{Arch: "mlp", Hidden: []int{16}}, model.MNISTInput, 1)
	s := &State{Model: m, Batch: 100, Masks: make([][]byte, len(m.Params))}
	for _, p := range m.Params {
		s.Params = append(s.Params, p.Data())
	}
	orig := slices.Clone(s.Params[0])
	pol := &PrunePolicy{Label: "t", Layers: []string{"fc1"}, Granularity: "element",
		Schedule: schedule.Sparsity{Kind: "agp", Initial: 0.5, Final: 0.9, Start: 100, End: 300, Every: 100},
		Guard:    &schedule.Guard{Tolerance: 0.01, Undo: true}}
	step := func(seen int64, acc float64) {
		t.Helper()
		s.SamplesSeen = seen
		if err := pol.BeforeStep(s); err != nil {
			t.Fatal(err)
		}
		s.SamplesSeen = seen + 100
		if err := pol.EndEpoch(s, EpochMetrics{ValAccuracy: acc}); err != nil {
			t.Fatal(err)
		}
	}
	step(0, 0.90) // before the window: the baseline
	if pol.Events != 0 || pol.Guard.Baseline != 0.90 {
		t.Fatalf("events %d baseline %v", pol.Events, pol.Guard.Baseline)
	}
	step(100, 0.85) // the first event prunes half; accuracy falls 5 points: pause and undo
	if pol.Events != 1 || !pol.Guard.Paused || s.GuardPauses != 1 {
		t.Fatalf("events %d paused %v pauses %d", pol.Events, pol.Guard.Paused, s.GuardPauses)
	}
	if !slices.Equal(s.Params[0], orig) || s.Masks[0] != nil {
		t.Fatal("the pruning step was not undone")
	}
	step(200, 0.895) // paused: the event at 200 is skipped; accuracy recovers: resume
	if pol.Events != 1 || pol.Guard.Paused {
		t.Fatalf("events %d paused %v", pol.Events, pol.Guard.Paused)
	}
	step(300, 0.90) // the event at the window's end prunes to the final target
	if pol.Events != 2 || math.Abs(compress.Sparsity(s.Params[0])-0.9) > 1e-3 {
		t.Fatalf("events %d sparsity %v", pol.Events, compress.Sparsity(s.Params[0]))
	}
}

// TestFactorizeMidRunComposesWithPruning factorizes fc1 after one epoch
// while fc2 is being pruned, and checks that training goes on.
func TestFactorizeMidRunComposesWithPruning(t *testing.T) {
	train, val := synthetic(640, 1), synthetic(200, 2)
	m, _ := model.New(model.Spec{Arch: "mlp", Hidden: []int{64, 32}}, model.MNISTInput, 1)
	eng := cpu.New(cpu.Options{Threads: 2})
	o, _ := NewOptimizer(OptimConfig{Kind: "sgd", Momentum: 0.9, Engine: eng}, sizes(m))
	prune := &PrunePolicy{Label: "fc2", Layers: []string{"fc2"}, Granularity: "element",
		Schedule: schedule.Sparsity{Kind: "agp", Final: 0.5, Start: 0, End: 1280, Every: 320}}
	tr, err := New(Config{Model: m, Engine: eng, Train: train, Val: val, Batch: 32, Epochs: 3, Seed: 1, Optimizer: o,
		Policies:  []Policy{&LRPolicy{Schedule: schedule.LR{Kind: "constant", Base: 0.05, Total: 1}}, prune},
		Factorize: []FactorizeAt{{Layer: "fc1", Rank: 16, Epoch: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	res, err := tr.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fm := tr.Model()
	if len(res.Ranks) != 1 || res.Ranks[0] != 16 || fm.Param("fc1.v") == nil || fm.Param("fc1") != nil {
		t.Fatalf("ranks %v, weights %v", res.Ranks, res.Epochs[len(res.Epochs)-1].LayerNames)
	}
	if s := compress.Sparsity(fm.Param("fc2").Data()); math.Abs(s-0.5) > 0.01 {
		t.Fatalf("fc2 sparsity %v after the rebuild, want 0.5", s)
	}
	if res.ValAccuracy < 0.9 {
		t.Fatalf("validation accuracy %.3f after factorizing", res.ValAccuracy)
	}
}

func TestRegularizerStrengthRamp(t *testing.T) {
	p := &RegularizePolicy{Strength: 1e-4, FinalStrength: 1e-3, Start: 100, End: 200}
	for _, tc := range []struct {
		seen int64
		want float64
	}{{0, 1e-4}, {100, 1e-4}, {150, 5.5e-4}, {200, 1e-3}, {900, 1e-3}} {
		if got := p.strength(tc.seen); math.Abs(got-tc.want) > 1e-12 {
			t.Fatalf("strength(%d) = %v, want %v", tc.seen, got, tc.want)
		}
	}
	p.FinalStrength = -1
	if p.strength(150) != 1e-4 {
		t.Fatal("constant strength changed")
	}
}

// TestThinMidRun prunes half of fc1's neurons, thins after the window and
// checks that training goes on with the smaller model.
func TestThinMidRun(t *testing.T) {
	train, val := synthetic(640, 1), synthetic(200, 2)
	m, _ := model.New(model.Spec{Arch: "mlp", Hidden: []int{64, 32}}, model.MNISTInput, 1)
	eng := cpu.New(cpu.Options{Threads: 2})
	o, _ := NewOptimizer(OptimConfig{Kind: "sgd", Momentum: 0.9, Engine: eng}, sizes(m))
	prune := &PrunePolicy{Label: "rows", Layers: []string{"fc1"}, Granularity: compress.Rows, Norm: compress.L2,
		Schedule: schedule.Sparsity{Kind: "agp", Final: 0.5, Start: 0, End: 640, Every: 160}}
	unstructured := &PrunePolicy{Label: "fc2", Layers: []string{"fc2"}, Granularity: compress.Element,
		Schedule: schedule.Sparsity{Kind: "one_shot", Final: 0.6, Start: 320}}
	tr, err := New(Config{Model: m, Engine: eng, Train: train, Val: val, Batch: 32, Epochs: 3, Seed: 1, Optimizer: o,
		Policies:    []Policy{&LRPolicy{Schedule: schedule.LR{Kind: "constant", Base: 0.05, Total: 1}}, prune, unstructured},
		ThinAtEpoch: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	res, err := tr.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := tr.Model().Param("fc1").Shape; got[0] != 32 || tr.Model().Param("fc2").Shape[1] != 32 {
		t.Fatalf("fc1 %v fc2 %v after thinning", got, tr.Model().Param("fc2").Shape)
	}
	if res.ValAccuracy < 0.9 {
		t.Fatalf("validation accuracy %.3f after thinning", res.ValAccuracy)
	}
	// fc2's pruned weights in the kept columns stayed pruned through the
	// rebuild and a further epoch of training.
	if sp := compress.Sparsity(tr.Model().Param("fc2").Data()); sp < 0.5 {
		t.Fatalf("fc2 sparsity %.3f after thinning and training, want ≥ 0.5", sp)
	}
}

func TestDistillationTrainsTheStudent(t *testing.T) {
	train, val := synthetic(640, 1), synthetic(200, 2)
	teacher, _ := run(t, model.Spec{Arch: "mlp", Hidden: []int{64}}, OptimConfig{Kind: "sgd", Momentum: 0.9}, 3, 7, train, val)
	student, _ := model.New(model.Spec{Arch: "mlp", Hidden: []int{16}}, model.MNISTInput, 2)
	eng := cpu.New(cpu.Options{Threads: 2})
	o, _ := NewOptimizer(OptimConfig{Kind: "sgd", Momentum: 0.9, Engine: eng}, sizes(student))
	tr, err := New(Config{Model: student, Engine: eng, Train: train, Val: val, Batch: 32, Epochs: 3, Seed: 1, Optimizer: o,
		Teachers: []*model.Model{teacher}, KD: &distill.Config{Temperature: 4, Alpha: 0.7}, Augment: data.Augment{Shift: 1},
		Policies: []Policy{&LRPolicy{Schedule: schedule.LR{Kind: "constant", Base: 0.05, Total: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	res, err := tr.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.ValAccuracy < 0.9 {
		t.Fatalf("student validation accuracy %.3f after distillation", res.ValAccuracy)
	}
	if res.Epochs[0].TrainAccuracy <= 0 {
		t.Fatal("no training accuracy counted with the distillation loss")
	}
	if _, err := New(Config{Model: student, Engine: eng, Train: train, Batch: 32, Epochs: 1, Optimizer: o, KD: &distill.Config{Temperature: 2, Alpha: 0.5}}); err == nil {
		t.Fatal("distillation without a teacher accepted")
	}
}

func TestECEAndAgreement(t *testing.T) {
	// Four answers at confidence 0.95, two right: the 0.9-1.0 bin is off by
	// 0.45; four at 0.55, all right: the 0.5-0.6 bin is off by 0.45.
	p := Predictions{
		Class:      []int{1, 2, 3, 4, 5, 6, 7, 8},
		Confidence: []float64{0.95, 0.95, 0.95, 0.95, 0.55, 0.55, 0.55, 0.55},
		Correct:    []bool{true, true, false, false, true, true, true, true},
	}
	if e := p.ECE(15); math.Abs(e-0.45) > 1e-12 {
		t.Fatalf("ECE %v, want 0.45", e)
	}
	if a := p.Accuracy(); a != 0.75 {
		t.Fatalf("accuracy %v", a)
	}
	q := p
	q.Class = []int{1, 2, 3, 4, 0, 0, 0, 0}
	if a := Agreement(p, q); a != 0.5 {
		t.Fatalf("agreement %v", a)
	}
}

func TestEnsemblePredictionsAverageLogits(t *testing.T) {
	val := synthetic(200, 2)
	a, _ := model.New(model.Spec{Arch: "mlp", Hidden: []int{8}}, model.MNISTInput, 1)
	b, _ := model.New(model.Spec{Arch: "mlp", Hidden: []int{8}}, model.MNISTInput, 2)
	eng := cpu.New(cpu.Options{Threads: 2})
	one, err := PredictEnsemble([]*model.Model{a}, eng, val, 64)
	if err != nil {
		t.Fatal(err)
	}
	alone, _ := PredictModel(a, eng, val, 64)
	if !slices.Equal(one.Class, alone.Class) || one.Loss != alone.Loss {
		t.Fatal("an ensemble of one differs from its model")
	}
	two, err := PredictEnsemble([]*model.Model{a, b}, eng, val, 64)
	if err != nil || len(two.Class) != 200 {
		t.Fatalf("%v %d", err, len(two.Class))
	}
	// Against an ensemble with itself, a model agrees everywhere.
	same, _ := PredictEnsemble([]*model.Model{a, a}, eng, val, 64)
	if Agreement(same, alone) != 1 {
		t.Fatal("mean of a model with itself changed its answers")
	}
}

// TestRecall: the confusion counts, per-class recall and its mean over
// the classes present.
func TestRecall(t *testing.T) {
	p := Predictions{Class: []int{0, 0, 1, 2, 2, 0}}
	recall, macro := p.Recall([]byte{0, 1, 1, 2, 2, 0}, 4)
	if recall[0] != 1 || recall[1] != 0.5 || recall[2] != 1 || !math.IsNaN(recall[3]) || macro != 2.5/3 {
		t.Fatalf("recall %v, macro %v", recall, macro)
	}
	if m := p.Confusion([]byte{0, 1, 1, 2, 2, 0}, 4); m[1][0] != 1 || m[1][1] != 1 || m[0][0] != 2 || m[2][2] != 2 || m[3][3] != 0 {
		t.Fatalf("confusion %v", m)
	}
}
