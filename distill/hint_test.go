package distill

import (
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compute/cpu"
)

// hintLoss computes w/(2B)·Σ‖h_s·P − h_t‖² in float64, by hand.
func hintLoss(w float64, hs, p, ht []float32, b, ds, dt int) float64 {
	var sum float64
	for i := range b {
		for j := range dt {
			r := -float64(ht[i*dt+j])
			for k := range ds {
				r += float64(hs[i*ds+k]) * float64(p[k*dt+j])
			}
			sum += r * r
		}
	}
	return w * sum / (2 * float64(b))
}

// TestHintLossAndGradients checks the hint term's value against a hand
// computation and its gradients (student activations and projection)
// against finite differences, and that the teacher's side gets none: for
// a fully connected layer's activations [6, ds] and for a sequence layer's
// [2, 3·ds] (two samples of three positions, each position a row).
func TestHintLossAndGradients(t *testing.T) {
	for _, shape := range []tensor.Shape{{6, 4}, {2, 3 * 4}} {
		testHint(t, shape)
	}
}

func testHint(t *testing.T, shape tensor.Shape) {
	const b, ds, dt, w = 6, 4, 5, 0.7
	r := rand.New(rand.NewPCG(1, 2))
	rnd := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	hsv, pv, htv := rnd(b*ds), rnd(ds*dt), rnd(b*dt)
	g := G.NewGraph()
	hs := G.NewMatrix(g, tensor.Float32, G.WithShape(shape...), G.WithName("hs"), G.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(hsv))))
	p := G.NewMatrix(g, tensor.Float32, G.WithShape(ds, dt), G.WithName("p"), G.WithValue(tensor.New(tensor.WithShape(ds, dt), tensor.WithBacking(pv))))
	ht := G.NewMatrix(g, tensor.Float32, G.WithShape(b, dt), G.WithName("ht"), G.WithValue(tensor.New(tensor.WithShape(b, dt), tensor.WithBacking(htv))))
	op := NewHintOp(cpu.New(cpu.Options{Threads: 1}), w, b, ds, dt)
	base := G.NewScalar(g, tensor.Float32, G.WithName("base"), G.WithValue(float32(1.5)))
	loss, err := G.ApplyOp(op, base, hs, p, ht)
	if err != nil {
		t.Fatal(err)
	}
	grads, err := G.Grad(loss, base, hs, p)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	want := hintLoss(w, hsv, pv, htv, b, ds, dt)
	if math.Abs(op.Loss-want) > 1e-5*want || math.Abs(float64(graphopScalar(loss.Value()))-1.5-want) > 1e-4*want {
		t.Fatalf("loss %v (total %v), by hand %v + 1.5", op.Loss, loss.Value(), want)
	}
	if gb := graphopScalar(grads[0].Value()); gb != 1 {
		t.Fatalf("gradient of the base loss %v, want 1", gb)
	}
	if !grads[1].Shape().Eq(shape) {
		t.Fatalf("student gradient %v, want the activations' %v", grads[1].Shape(), shape)
	}
	for k, x := range [][]float32{hsv, pv} {
		got := grads[k+1].Value().Data().([]float32)
		for i := range x {
			const h = 1e-3
			orig := x[i]
			x[i] = orig + h
			up := hintLoss(w, hsv, pv, htv, b, ds, dt)
			x[i] = orig - h
			down := hintLoss(w, hsv, pv, htv, b, ds, dt)
			x[i] = orig
			fd := (up - down) / (2 * h)
			if math.Abs(float64(got[i])-fd) > 1e-3*(1+math.Abs(fd)) {
				t.Fatalf("%v: gradient %d[%d]: %v, finite differences %v", shape, k, i, got[i], fd)
			}
		}
	}
}

func graphopScalar(v G.Value) float32 {
	switch t := v.(type) {
	case *G.F32:
		return float32(*t)
	case tensor.Tensor:
		return t.Data().(float32)
	}
	return float32(math.NaN())
}
