package distill

import (
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compute/cpu"
)

// TestLossByHand checks one two-class example worked out on paper:
// s = (1, 0), t = (0, 2), y = 0, T = 2, α = 0.7.
func TestLossByHand(t *testing.T) {
	sig := func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
	// softmax((1,0)/2) = (σ(0.5), 1−σ(0.5)); softmax((0,2)/2) = (1−σ(1), σ(1)).
	ps := []float64{sig(0.5), 1 - sig(0.5)}
	pt := []float64{1 - sig(1), sig(1)}
	kl := pt[0]*math.Log(pt[0]/ps[0]) + pt[1]*math.Log(pt[1]/ps[1])
	ce := -math.Log(sig(1))   // softmax((1,0))[0] = σ(1)
	want := 0.7*4*kl + 0.3*ce // the T² = 4 factor
	got := Loss(Config{Temperature: 2, Alpha: 0.7}, []float32{1, 0}, []float32{0, 2}, []float32{0}, 2, nil)
	if math.Abs(got-want) > 1e-6 {
		t.Fatalf("loss %.9f, want %.9f", got, want)
	}
	// Without the T² factor the distillation term would be 4× smaller.
	if noT2 := 0.7*kl + 0.3*ce; math.Abs(got-noT2) < 1e-3 {
		t.Fatal("the T² factor is missing")
	}
}

func TestGradientMatchesFiniteDifferences(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	n, c := 3, 5
	s, tl := make([]float32, n*c), make([]float32, n*c)
	for i := range s {
		s[i], tl[i] = float32(r.NormFloat64()*2), float32(r.NormFloat64()*2)
	}
	y := []float32{1, 4, 0}
	cfg := Config{Temperature: 4, Alpha: 0.5}
	checkGradient(t, cfg, s, tl, y, c)
}

// checkGradient compares Loss's gradient with respect to the student
// logits s with central differences.
func checkGradient(t *testing.T, cfg Config, s, tl, y []float32, c int) {
	t.Helper()
	g := make([]float32, len(s))
	Loss(cfg, s, tl, y, c, g)
	for i := range s {
		old := s[i]
		const eps = 1e-3
		s[i] = old + eps
		lp := Loss(cfg, s, tl, y, c, nil)
		s[i] = old - eps
		lm := Loss(cfg, s, tl, y, c, nil)
		s[i] = old
		num := (lp - lm) / (2 * eps)
		// float32 logits perturbed by 1e-3: central differences good to ~1e-5.
		if math.Abs(num-float64(g[i])) > 1e-4 {
			t.Fatalf("d/ds[%d]: analytic %v, numeric %v", i, g[i], num)
		}
	}
}

func TestEnsembleOfOneIsTheTeacher(t *testing.T) {
	teacher := []float32{1, -2, 3.5, 0}
	mean := make([]float32, 4)
	MeanLogits(mean, teacher)
	for i := range teacher {
		if mean[i] != teacher[i] {
			t.Fatalf("ensemble of one: %v, want %v", mean, teacher)
		}
	}
	MeanLogits(mean, []float32{1, 1, 1, 1}, []float32{3, -1, 0, 2})
	if mean[0] != 2 || mean[1] != 0 || mean[2] != 0.5 || mean[3] != 1.5 {
		t.Fatalf("mean %v", mean)
	}
}

func TestLossOpInAGraph(t *testing.T) {
	g := G.NewGraph()
	sv := tensor.New(tensor.WithShape(1, 2), tensor.WithBacking([]float32{1, 0}))
	tv := tensor.New(tensor.WithShape(1, 2), tensor.WithBacking([]float32{0, 2}))
	yv := tensor.New(tensor.WithShape(1), tensor.WithBacking([]float32{0}))
	s := G.NewMatrix(g, tensor.Float32, G.WithShape(1, 2), G.WithName("s"), G.WithValue(sv))
	tt := G.NewMatrix(g, tensor.Float32, G.WithShape(1, 2), G.WithName("t"), G.WithValue(tv))
	y := G.NewVector(g, tensor.Float32, G.WithShape(1), G.WithName("y"), G.WithValue(yv))
	cfg := Config{Temperature: 2, Alpha: 0.7}
	loss, err := G.ApplyOp(NewLossOp(cpu.New(cpu.Options{Threads: 1}), cfg), s, tt, y)
	if err != nil {
		t.Fatal(err)
	}
	grads, err := G.Grad(loss, s)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	want := make([]float32, 2)
	wantLoss := Loss(cfg, []float32{1, 0}, []float32{0, 2}, []float32{0}, 2, want)
	if got := float64(loss.Value().Data().(float32)); math.Abs(got-wantLoss) > 1e-6 {
		t.Fatalf("loss %v, want %v", got, wantLoss)
	}
	gv := grads[0].Value().Data().([]float32)
	if gv[0] != want[0] || gv[1] != want[1] || gv[0]+gv[1] > 1e-6 {
		t.Fatalf("gradient %v, want %v (rows of a softmax gradient sum to 0)", gv, want)
	}
	if (Config{Temperature: 0, Alpha: 0.5}).Validate() == nil || (Config{Temperature: 2, Alpha: 1.5}).Validate() == nil {
		t.Fatal("bad settings accepted")
	}
}

// TestClassWeightedLoss: weights of one are the unweighted loss to the
// bit; other weights give Σ w·term / Σ w of the per-sample losses, and
// the gradient still matches central differences.
func TestClassWeightedLoss(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 3))
	n, c := 4, 3
	s, tl := make([]float32, n*c), make([]float32, n*c)
	for i := range s {
		s[i], tl[i] = float32(r.NormFloat64()*2), float32(r.NormFloat64()*2)
	}
	y := []float32{0, 2, 2, 1}
	cfg := Config{Temperature: 2, Alpha: 0.3}
	g0, g1 := make([]float32, n*c), make([]float32, n*c)
	kd0, ce0 := Parts(cfg, s, tl, y, c, g0)
	ones := cfg
	ones.ClassWeights = []float32{1, 1, 1}
	kd1, ce1 := Parts(ones, s, tl, y, c, g1)
	if kd0 != kd1 || ce0 != ce1 {
		t.Fatalf("weights of one: (%v, %v), unweighted (%v, %v)", kd1, ce1, kd0, ce0)
	}
	for i := range g0 {
		if g0[i] != g1[i] {
			t.Fatalf("weights of one: gradient %d %v, unweighted %v", i, g1[i], g0[i])
		}
	}
	w := Config{Temperature: 2, Alpha: 0.3, ClassWeights: []float32{0.5, 3, 1.5}}
	var want, wsum float64
	for i := range y {
		kd, ce := Parts(cfg, s[i*c:(i+1)*c], tl[i*c:(i+1)*c], y[i:i+1], c, nil)
		wi := float64(w.ClassWeights[int(y[i])])
		want += wi * (kd + ce)
		wsum += wi
	}
	want /= wsum
	if got := Loss(w, s, tl, y, c, nil); math.Abs(got-want) > 1e-12 {
		t.Fatalf("weighted loss %v, want %v", got, want)
	}
	checkGradient(t, w, s, tl, y, c)
}

// TestLabelSmoothedLoss: the smoothed task term is −Σ q·log softmax(s)
// with q = (1 − ε)·onehot(y) + ε/c, its gradient matches finite
// differences, and ε = 0 gives the plain loss's bits.
func TestLabelSmoothedLoss(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 5))
	n, c := 3, 4
	s, tl := make([]float32, n*c), make([]float32, n*c)
	for i := range s {
		s[i], tl[i] = float32(r.NormFloat64()*2), float32(r.NormFloat64()*2)
	}
	y := []float32{3, 0, 1}
	plain := Config{Temperature: 2, Alpha: 0.4, ClassWeights: []float32{1, 2, 0.5, 1}}
	zero := plain
	zero.LabelSmoothing = 0
	if Loss(plain, s, tl, y, c, nil) != Loss(zero, s, tl, y, c, nil) {
		t.Fatal("ε = 0 changed the loss")
	}
	e := 0.2
	sm := plain
	sm.LabelSmoothing = e
	kd0, _ := Parts(plain, s, tl, y, c, nil)
	kd, ce := Parts(sm, s, tl, y, c, nil)
	if kd != kd0 {
		t.Fatalf("smoothing changed the distillation term: %v, want %v", kd, kd0)
	}
	var want, wsum float64
	p := make([]float64, c)
	for i := range y {
		softmax(p, s[i*c:(i+1)*c], 1)
		w := float64(plain.ClassWeights[int(y[i])])
		for j := range p {
			q := e / float64(c)
			if j == int(y[i]) {
				q += 1 - e
			}
			want -= w * (1 - plain.Alpha) * q * math.Log(p[j])
		}
		wsum += w
	}
	if want /= wsum; math.Abs(ce-want) > 1e-12 {
		t.Fatalf("smoothed task term %v, want %v", ce, want)
	}
	checkGradient(t, sm, s, tl, y, c)
	if err := (Config{Temperature: 1, LabelSmoothing: 1}).Validate(); err == nil {
		t.Fatal("ε = 1 accepted")
	}
}
