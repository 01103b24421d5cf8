package compress

import (
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/model"
)

// layer is a fixed layer: weights [rows, cols] and inputs whose features
// are correlated (a shared factor) and of unequal scales, as a network's
// are.
func layer(rows, cols, n int) ([]float32, *Hessian) {
	r := rand.New(rand.NewPCG(7, 11))
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(r.NormFloat64() * 0.1)
	}
	h := NewHessian(cols)
	x := make([]float32, n*cols)
	scale := make([]float64, cols)
	for j := range scale {
		scale[j] = 0.2 + 2*r.Float64()
	}
	for i := range n {
		f := r.NormFloat64()
		for j := range cols {
			x[i*cols+j] = float32(scale[j] * (0.7*f + 0.5*r.NormFloat64()))
		}
	}
	h.Add(x[:7*cols]) // in two calls: a short one, then the rest
	h.Add(x[7*cols:])
	if h.N != n {
		panic("rows not counted")
	}
	return w, h
}

// TestGPTQBeatsRounding: on a fixed layer, GPTQ's output error is below
// round-to-nearest's at 8, 4 and 3 bits (per-channel scales both), and its
// codes stay in the bits' range.
func TestGPTQBeatsRounding(t *testing.T) {
	w, h := layer(32, 144, 2000)
	for _, bits := range []int{8, 4, 3} {
		spec := model.QuantSpec{Bits: bits, Symmetric: true, PerChannel: true}
		rtn := ParamsFor(spec, w, 32)
		what := make([]float32, len(w))
		rtn.Dequantize(what, rtn.Quantize(w))
		p, codes, err := GPTQ(w, h, spec, DefaultDamp)
		if err != nil {
			t.Fatal(err)
		}
		gq := make([]float32, len(w))
		p.Dequantize(gq, codes)
		for _, c := range codes {
			if c < p.QMin || c > p.QMax {
				t.Fatalf("%d bits: code %d outside [%d, %d]", bits, c, p.QMin, p.QMax)
			}
		}
		er, eg := h.Error(w, what), h.Error(w, gq)
		t.Logf("%d bits: output error RTN %.3g, GPTQ %.3g (%.2f×)", bits, er, eg, er/eg)
		if !(eg < er) {
			t.Errorf("%d bits: GPTQ's error %g is not below round-to-nearest's %g", bits, eg, er)
		}
	}
}

// TestSparseGPTBeatsMagnitude: at 50 % and 2:4, SparseGPT's output error is
// below one-shot magnitude pruning's at the same sparsity, and its masks
// have that sparsity.
func TestSparseGPTBeatsMagnitude(t *testing.T) {
	w, h := layer(32, 256, 2000)
	for _, c := range []struct {
		name string
		s    float64
		n, m int
	}{{"50%", 0.5, 0, 0}, {"2:4", 0, 2, 4}} {
		mag := append([]float32(nil), w...)
		var mask []byte
		var err error
		if c.m > 0 {
			mask, err = NOfM(Weight{Name: "w", Shape: []int{32, 256}, Data: mag}, c.n, c.m)
		} else {
			mask = Magnitude(Weight{Name: "w", Shape: []int{32, 256}, Data: mag}, c.s)
		}
		if err != nil {
			t.Fatal(err)
		}
		Apply(mask, mag)
		sg := append([]float32(nil), w...)
		if _, err := SparseGPT(sg, h, c.s, c.n, c.m, DefaultDamp); err != nil {
			t.Fatal(err)
		}
		if s := Sparsity(sg); s < 0.5-1e-9 || s > 0.5+1e-3 {
			t.Errorf("%s: SparseGPT left sparsity %g", c.name, s)
		}
		if c.m > 0 {
			for g := 0; g < len(sg); g += 4 {
				nz := 0
				for _, v := range sg[g : g+4] {
					if v != 0 {
						nz++
					}
				}
				if nz > 2 {
					t.Fatalf("2:4: group %d keeps %d", g/4, nz)
				}
			}
		}
		em, es := h.Error(w, mag), h.Error(w, sg)
		t.Logf("%s: output error magnitude %.3g, SparseGPT %.3g (%.2f×)", c.name, em, es, em/es)
		if !(es < em) {
			t.Errorf("%s: SparseGPT's error %g is not below magnitude's %g", c.name, es, em)
		}
	}
}
