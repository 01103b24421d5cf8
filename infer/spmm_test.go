package infer

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/internal/kernels"
)

// TestCSRTMatchesTheOtherKernels runs one sparse linear layer (with
// empty rows, ReLU and an activation quantization) through every kernel,
// with the SIMD kernel and with its portable fallback, at batches that
// are and are not multiples of the SIMD width: the outputs agree to
// rounding.
func TestCSRTMatchesTheOtherKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	in, out := 300, 70
	l := &Layer{Name: "fc", Kind: "linear", In: in, Out: out, ReLU: true, w: make([]float32, in*out), b: make([]float32, out),
		actQ: newQuantizer(8, false, 0, 4)}
	for i := range l.w {
		if r.IntN(10) == 0 && i/in%9 != 4 { // every ninth row empty
			l.w[i] = float32(r.NormFloat64())
		}
	}
	for i := range l.b {
		l.b[i] = float32(r.NormFloat64())
	}
	l.buildCSR()
	m := &Model{eng: cpu.New(cpu.Options{Threads: 2})}
	simd := hasFMA
	defer func() { hasFMA = simd }()
	for _, batch := range []int{1, 31, 32, 33, 200} {
		x := make([]float32, batch*in)
		for i := range x {
			x[i] = float32(r.Float64())
		}
		want := make([]float32, batch*out)
		m.run(l, CSR, want, x, batch)
		dense := make([]float32, batch*out)
		m.run(l, Dense, dense, x, batch)
		ld := ldFor(batch)
		for _, fma := range []bool{simd, false} {
			hasFMA = fma
			xT, yT := make([]float32, in*ld), make([]float32, out*ld)
			for i := range xT {
				xT[i] = float32(math.NaN()) // padding lanes must not leak into samples
			}
			transpose(xT, x, batch, in, ld)
			l.runT(yT, xT, ld)
			got := make([]float32, batch*out)
			untranspose(got, yT, batch, out, ld)
			for i := range want {
				// One quantization step (scale 4/255) apart at most, where
				// rounding put a value on the other side of a tie.
				if d := math.Abs(float64(got[i] - want[i])); d > 0.0158 || math.IsNaN(float64(got[i])) {
					t.Fatalf("batch %d, SIMD %v: output %d is %g, CSR gives %g", batch, fma, i, got[i], want[i])
				}
				if d := math.Abs(float64(dense[i] - want[i])); d > 0.0158 {
					t.Fatalf("batch %d: dense %g, CSR %g at %d", batch, dense[i], want[i], i)
				}
			}
		}
	}
}

// TestInt8MatchesDense runs layers with quantized weights — 8-bit
// asymmetric per channel (codes above 127) and 4-bit symmetric per tensor
// — on quantized inputs (unsigned, and signed codes), with VNNI, with
// AVX2 and with the portable Go loop: the outputs equal the dense
// kernel's on the dequantized weights up to float rounding.
func TestInt8MatchesDense(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	vnni, avx2 := hasVNNI, hasAVX2
	defer func() { hasVNNI, hasAVX2 = vnni, avx2 }()
	m := &Model{eng: cpu.New(cpu.Options{Threads: 1})}
	for _, tc := range []struct {
		bits      int
		symmetric bool
		perChan   bool
		in        *quantizer
	}{
		{8, false, true, newQuantizer(8, false, 0, 3)},
		{4, true, false, newQuantizer(6, true, -2, 2)},
		{8, true, true, pixelQuant},
	} {
		in, out := 37, 21 // neither a multiple of 16
		q := &checkpoint.Quant{Bits: tc.bits, Codes: make([]int32, in*out)}
		qmin, qmax := kernels.Range(tc.bits, tc.symmetric)
		q.QMin = qmin
		chans := 1
		if tc.perChan {
			chans = out
		}
		for c := 0; c < chans; c++ {
			q.Scale = append(q.Scale, float32(0.01+0.02*r.Float64()))
			z := int32(0)
			if !tc.symmetric {
				z = qmin + r.Int32N(qmax-qmin+1)
			}
			q.Zero = append(q.Zero, z)
		}
		l := &Layer{Name: "fc", Kind: "linear", In: in, Out: out, ReLU: true, w: make([]float32, in*out), b: make([]float32, out), wq: q}
		for i := range q.Codes {
			c := i / in
			if !tc.perChan {
				c = 0
			}
			q.Codes[i] = qmin + r.Int32N(qmax-qmin+1)
			l.w[i] = float32(q.Codes[i]-q.Zero[c]) * q.Scale[c]
		}
		for i := range l.b {
			l.b[i] = float32(r.NormFloat64())
		}
		l.k8 = newInt8(l, q, tc.in)
		if l.k8 == nil {
			t.Fatalf("%+v: no int8 kernel", tc)
		}
		for _, batch := range []int{1, 5, 8} {
			x := make([]float32, batch*in)
			for i := range x {
				x[i] = float32(r.Float64()*4 - 1)
			}
			tc.in.Apply(x) // inputs are quantized values, as a quantized layer's output is
			want := make([]float32, batch*out)
			m.run(l, Dense, want, x, batch)
			for _, mode := range [][2]bool{{vnni, avx2}, {false, avx2}, {false, false}} {
				hasVNNI, hasAVX2 = mode[0], mode[1]
				got := make([]float32, batch*out)
				m.run(l, Int8, got, x, batch)
				for i := range want {
					if d := math.Abs(float64(got[i] - want[i])); d > 1e-4*(1+math.Abs(float64(want[i]))) {
						t.Fatalf("%d-bit symmetric=%v, batch %d, VNNI %v, AVX2 %v: output %d is %g, dense gives %g",
							tc.bits, tc.symmetric, batch, mode[0], mode[1], i, got[i], want[i])
					}
				}
			}
		}
	}
}

// TestQuantizeMatchesScalar: the SIMD input quantization gives the same
// codes and sum as the scalar one, ties, saturation and huge values
// included, for unsigned and signed codes.
func TestQuantizeMatchesScalar(t *testing.T) {
	if !hasVNNI {
		t.Skip("no AVX-512 VNNI here: only the scalar path runs")
	}
	r := rand.New(rand.NewPCG(5, 6))
	defer func(v bool) { hasVNNI = v }(hasVNNI)
	for _, q := range []*quantizer{pixelQuant, newQuantizer(8, false, -1, 3), newQuantizer(6, true, -2, 2), newQuantizer(4, false, 0, 1)} {
		xOff := int32(0)
		if q.Qmin < 0 {
			xOff = 128
		}
		k8 := &int8Layer{in: q, xOff: xOff}
		x := make([]float32, 16*40+7)
		for i := range x {
			switch i % 5 {
			case 0: // a tie: half-way between two codes
				x[i] = (float32(r.IntN(40)-20) + 0.5) * q.Scale
			case 1:
				x[i] = float32(r.NormFloat64() * 1e30)
			default:
				x[i] = float32(r.NormFloat64() * 3)
			}
		}
		simd, scalar := make([]uint8, len(x)), make([]uint8, len(x))
		hasVNNI = true
		s1 := k8.quantize(simd, x)
		hasVNNI = false
		s2 := k8.quantize(scalar, x)
		if s1 != s2 {
			t.Fatalf("sums %d and %d", s1, s2)
		}
		for i := range x {
			if simd[i] != scalar[i] {
				t.Fatalf("x=%g: SIMD code %d, scalar %d", x[i], simd[i], scalar[i])
			}
		}
	}
}

// TestNMMatchesCSR runs a 2:4-sparse layer (groups with 2, 1 and 0
// weights; inputs not a multiple of the 32-input chunk) through the N:M
// kernel, with AVX-512 and with the Go loop, against CSR; a layer with 3
// weights in a group gets no N:M kernel.
func TestNMMatchesCSR(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	in, out := 100, 13
	w := make([]float32, in*out)
	for row := 0; row < out; row++ {
		for g := 0; g < in; g += 4 {
			for _, i := range r.Perm(4)[:r.IntN(3)] {
				w[row*in+g+i] = float32(r.NormFloat64())
			}
		}
	}
	l := &Layer{Name: "fc", Kind: "linear", In: in, Out: out, w: w, b: make([]float32, out)}
	l.buildCSR()
	for row := range l.b {
		l.b[row] = float32(row)
	}
	if l.nm = newNM(w, out, in); l.nm == nil {
		t.Fatal("a 2:4 layer got no N:M kernel")
	}
	m := &Model{eng: cpu.New(cpu.Options{Threads: 1})}
	defer func(v bool) { hasAVX512 = v }(hasAVX512)
	x := make([]float32, 3*in)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	want := make([]float32, 3*out)
	m.run(l, CSR, want, x, 3)
	for _, simd := range []bool{hasAVX512, false} {
		hasAVX512 = simd
		got := make([]float32, 3*out)
		m.run(l, NM, got, x, 3)
		for i := range want {
			if d := math.Abs(float64(got[i] - want[i])); d > 1e-4*(1+math.Abs(float64(want[i]))) {
				t.Fatalf("AVX-512 %v: output %d is %g, CSR gives %g", simd, i, got[i], want[i])
			}
		}
	}
	w[5], w[6], w[7] = 1, 1, 1
	if newNM(w, out, in) != nil {
		t.Fatal("3 weights in a group of 4 got an N:M kernel")
	}
}

// TestGEMVMatchesDot: the one-sample dense kernel (four rows at a time in
// AVX-512, tails of rows and inputs in Go) against plain dot products.
func TestGEMVMatchesDot(t *testing.T) {
	if !hasAVX512 {
		t.Skip("no AVX-512 here: the dense kernel at batch 1 is the GEMM")
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, sz := range [][2]int{{300, 784}, {100, 300}, {10, 100}, {7, 17}, {5, 48}} {
		l := &Layer{Out: sz[0], In: sz[1], w: make([]float32, sz[0]*sz[1]), b: make([]float32, sz[0])}
		x := make([]float32, sz[1])
		for _, v := range [][]float32{l.w, l.b, x} {
			for i := range v {
				v[i] = r.Float32()*2 - 1
			}
		}
		y := make([]float32, sz[0])
		l.gemv(y, x)
		for o := range sz[0] {
			want := float64(l.b[o])
			for k := range sz[1] {
				want += float64(l.w[o*sz[1]+k]) * float64(x[k])
			}
			if math.Abs(float64(y[o])-want) > 1e-4 {
				t.Fatalf("%v: row %d is %v, want %v", sz, o, y[o], want)
			}
		}
	}
}
