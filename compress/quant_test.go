package compress

import (
	"github.com/lathe-ml/lathe/model"

	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compute/cpu"
)

func TestRepresentableValuesRoundTripExactly(t *testing.T) {
	for bits := 2; bits <= 8; bits++ {
		for _, sym := range []bool{true, false} {
			spec := model.QuantSpec{Bits: bits, Symmetric: sym}
			p := ParamsFromRange(spec, []float32{-0.7}, []float32{1.3})
			var x []float32
			for q := p.QMin; q <= p.QMax; q++ {
				x = append(x, float32(q-p.Zero[0])*p.Scale[0])
			}
			y := make([]float32, len(x))
			p.FakeQuant(y, x, nil)
			for i := range x {
				if y[i] != x[i] {
					t.Fatalf("%d bits sym=%v: %v became %v", bits, sym, x[i], y[i])
				}
			}
			back := make([]float32, len(x))
			p.Dequantize(back, p.Quantize(x))
			for i := range x {
				if back[i] != x[i] {
					t.Fatalf("%d bits sym=%v: quantize/dequantize %v → %v", bits, sym, x[i], back[i])
				}
			}
			// Zero is representable: pruned weights stay exactly zero.
			z := []float32{0}
			p.FakeQuant(z, z, nil)
			if z[0] != 0 {
				t.Fatalf("%d bits sym=%v: 0 → %v", bits, sym, z[0])
			}
		}
	}
	if (model.QuantSpec{Bits: 9}).Validate() == nil || (model.QuantSpec{Bits: 1}).Validate() == nil {
		t.Fatal("bits outside 2..8 accepted")
	}
}

func TestPerChannelScalesArePerChannel(t *testing.T) {
	// Three rows of very different magnitude.
	w := []float32{1, -2, 0.5, 0.01, 0.02, -0.005, 100, 50, -80}
	p := ParamsFor(model.QuantSpec{Bits: 8, Symmetric: true, PerChannel: true}, w, 3)
	want := []float32{2.0 / 127, 0.02 / 127, 100.0 / 127}
	for c := range want {
		if math.Abs(float64(p.Scale[c]-want[c])) > 1e-9 {
			t.Fatalf("scale %d = %v, want %v", c, p.Scale[c], want[c])
		}
	}
	q := make([]float32, len(w))
	p.FakeQuant(q, w, nil)
	// The small row keeps its precision: per-tensor it would collapse to zero.
	if q[3] == 0 || math.Abs(float64(q[3]-w[3])) > float64(want[1]) {
		t.Fatalf("small channel quantized to %v", q[3:6])
	}
	pt := ParamsFor(model.QuantSpec{Bits: 8, Symmetric: true}, w, 3)
	if len(pt.Scale) != 1 {
		t.Fatalf("per-tensor spec gave %d scales", len(pt.Scale))
	}
}

func TestSTEGradientIsIdentityInsideZeroOutside(t *testing.T) {
	g := G.NewGraph()
	xv := tensor.New(tensor.WithShape(6), tensor.WithBacking([]float32{-3, -1, -0.2, 0.4, 0.99, 2.5}))
	x := G.NewVector(g, tensor.Float32, G.WithShape(6), G.WithName("x"), G.WithValue(xv))
	eng := cpu.New(cpu.Options{Threads: 1})
	op := NewFakeQuant("fq", eng, model.QuantSpec{Bits: 4, Symmetric: true}, 1)
	fixed := ParamsFromRange(op.Spec, []float32{-1}, []float32{1}) // frozen range [-1, 1]
	op.Params = &fixed
	y, err := G.ApplyOp(op, x)
	if err != nil {
		t.Fatal(err)
	}
	cost := G.Must(G.Sum(y))
	grads, err := G.Grad(cost, x)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	got := grads[0].Value().Data().([]float32)
	want := []float32{0, 1, 1, 1, 1, 0}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("STE gradient %v, want %v", got, want)
		}
	}
	out := y.Value().Data().([]float32)
	if out[0] != -1 || out[5] != 1 {
		t.Fatalf("clipped values %v", out)
	}
}

func TestFakeQuantErrorShrinksWithBits(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	w := make([]float32, 1000)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	prev := math.Inf(1)
	for _, bits := range []int{2, 3, 4, 6, 8} {
		p := ParamsFor(model.QuantSpec{Bits: bits, Symmetric: true}, w, 1)
		q := make([]float32, len(w))
		p.FakeQuant(q, w, nil)
		var e float64
		for i := range w {
			e += math.Abs(float64(q[i] - w[i]))
		}
		if e >= prev {
			t.Fatalf("%d bits: error %v not below %v", bits, e, prev)
		}
		prev = e
	}
}

func TestRoundEven32MatchesMath(t *testing.T) {
	for _, x := range []float32{0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.49999, -3.5000002, 126.5, -127.5, 1e7 + 0.5, 3e9, float32(math.Inf(1))} {
		want := float32(math.RoundToEven(float64(x)))
		if got := roundEven32(x); got != want {
			t.Fatalf("roundEven32(%v) = %v, want %v", x, got, want)
		}
	}
}

func TestObserverMovesThenFreezes(t *testing.T) {
	o := &model.Observer{Spec: model.QuantSpec{Bits: 8}, Momentum: 0.9}
	Observe(o, []float32{0, 1, 2})
	if o.Min != 0 || o.Max != 2 {
		t.Fatalf("first batch: [%v, %v]", o.Min, o.Max)
	}
	Observe(o, []float32{0, 12})
	if math.Abs(float64(o.Max-3)) > 1e-6 { // 0.9·2 + 0.1·12
		t.Fatalf("moving max %v, want 3", o.Max)
	}
	o.Frozen = true
	Observe(o, []float32{-50, 50})
	if o.Min != 0 || math.Abs(float64(o.Max-3)) > 1e-6 {
		t.Fatalf("a frozen observer moved: [%v, %v]", o.Min, o.Max)
	}
	p := ObserverParams(o)
	if p.Zero[0] != 0 || math.Abs(float64(p.Scale[0]-3.0/255)) > 1e-9 {
		t.Fatalf("params %+v", p)
	}
}

// TestFakeQuantWithoutFlagsMatches checks that the pass without
// per-element flags (which skips clamping where nothing needs it) gives
// the same bits and the same verdict as the pass with them, for tensors
// inside and outside the parameters' range, and that MinMax's unrolled
// loop equals a plain one.
func TestFakeQuantWithoutFlagsMatches(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 5))
	for _, spec := range []model.QuantSpec{{Bits: 8, Symmetric: true, PerChannel: true}, {Bits: 4, PerChannel: true}, {Bits: 3, Symmetric: true}} {
		x := make([]float32, 30*37)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		own := ParamsFor(spec, x, 30)
		narrow := ParamsFor(spec, x[:len(x)/3], 30) // others fall outside its range
		for _, p := range []QuantParams{own, narrow} {
			a, b := make([]float32, len(x)), make([]float32, len(x))
			in := make([]bool, len(x))
			allA := p.FakeQuant(a, x, in)
			allB := p.FakeQuant(b, x, nil)
			if allA != allB {
				t.Fatalf("%+v: verdicts %v and %v", spec, allA, allB)
			}
			for i := range a {
				if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
					t.Fatalf("%+v: element %d: %v with flags, %v without", spec, i, a[i], b[i])
				}
			}
		}
		for n := 0; n < 11; n++ {
			lo, hi := MinMax(x[:n])
			var l, h float32
			for _, v := range x[:n] {
				if v < l {
					l = v
				}
				if v > h {
					h = v
				}
			}
			if lo != l || hi != h {
				t.Fatalf("MinMax of %d: %v %v, want %v %v", n, lo, hi, l, h)
			}
		}
	}
}
