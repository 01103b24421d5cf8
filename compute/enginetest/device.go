package enginetest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/compute"
)

// DeviceHarness is what the device suite needs: the device under test and
// a reference device (compute/host's) the same calls are checked against.
type DeviceHarness struct {
	Dev, Ref compute.Device
	// Exact demands identical bits (the strict device runs the reference's
	// own kernels); otherwise values agree within a float32 tolerance.
	Exact bool
}

type pair struct {
	dev, ref compute.Buffer
	n        int
}

// alloc puts x on both devices.
func (h DeviceHarness) alloc(t *testing.T, x []float32) pair {
	t.Helper()
	return h.upload(t, len(x), func(d compute.Device, b compute.Buffer) error { return d.Upload(b, x) })
}

// allocInt puts x on both devices as int32s.
func (h DeviceHarness) allocInt(t *testing.T, x []int32) pair {
	t.Helper()
	return h.upload(t, len(x), func(d compute.Device, b compute.Buffer) error { return d.UploadInt32(b, x) })
}

func (h DeviceHarness) upload(t *testing.T, n int, put func(compute.Device, compute.Buffer) error) pair {
	t.Helper()
	var bs [2]compute.Buffer
	for i, d := range []compute.Device{h.Dev, h.Ref} {
		b, err := d.Alloc(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := put(d, b); err != nil {
			t.Fatal(err)
		}
		bs[i] = b
	}
	return pair{bs[0], bs[1], n}
}

func (h DeviceHarness) free(ps ...pair) {
	for _, p := range ps {
		h.Dev.Free(p.dev)
		h.Ref.Free(p.ref)
	}
}

// check downloads both sides and compares them: identical bits when
// h.Exact, else |d − r| ≤ tol·(1 + |r|).
func (h DeviceHarness) check(t *testing.T, what string, p pair, tol float64) {
	t.Helper()
	d, r := make([]float32, p.n), make([]float32, p.n)
	if err := h.Dev.Download(d, p.dev); err != nil {
		t.Fatalf("%s: download: %v", what, err)
	}
	if err := h.Ref.Download(r, p.ref); err != nil {
		t.Fatalf("%s: reference download: %v", what, err)
	}
	for i := range d {
		if h.Exact {
			if math.Float32bits(d[i]) != math.Float32bits(r[i]) {
				t.Fatalf("%s[%d] = %v, reference %v (bits differ)", what, i, d[i], r[i])
			}
			continue
		}
		if diff := math.Abs(float64(d[i]) - float64(r[i])); !(diff <= tol*(1+math.Abs(float64(r[i])))) {
			t.Fatalf("%s[%d] = %v, reference %v (tolerance %g)", what, i, d[i], r[i], tol)
		}
	}
}

func randn(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// RunDevice checks every kernel of h.Dev against h.Ref on seeded random
// data, at the shapes lathe's MLP steps use and at awkward ones (not
// multiples of the GPU's block of 256 threads).
func RunDevice(t *testing.T, h DeviceHarness) {
	r := rand.New(rand.NewPCG(7, 8))
	t.Run("Gemm", func(t *testing.T) {
		for _, sh := range [][3]int{{1, 1, 1}, {3, 5, 7}, {128, 300, 784}, {300, 784, 128}, {257, 10, 100}, {1024, 100, 300}} {
			m, n, k := sh[0], sh[1], sh[2]
			for _, ta := range []bool{false, true} {
				for _, tb := range []bool{false, true} {
					a, b := h.alloc(t, randn(r, m*k)), h.alloc(t, randn(r, k*n))
					c := h.alloc(t, randn(r, m*n))
					h.Dev.Gemm(ta, tb, m, n, k, 0.5, a.dev, b.dev, 0.25, c.dev)
					h.Ref.Gemm(ta, tb, m, n, k, 0.5, a.ref, b.ref, 0.25, c.ref)
					// float32 sums of k unit-variance products in another order:
					// error ~ sqrt(k)·eps32 relative to the terms.
					h.check(t, fmt.Sprintf("gemm %dx%dx%d ta=%v tb=%v", m, n, k, ta, tb), c, 2e-6*math.Sqrt(float64(k))*4)
					h.free(a, b, c)
				}
			}
		}
	})
	t.Run("BiasActReLUGradColSum", func(t *testing.T) {
		for _, sh := range [][2]int{{1, 1}, {7, 300}, {1024, 10}, {33, 257}, {3000, 20}} {
			rows, cols := sh[0], sh[1]
			for _, relu := range []bool{false, true} {
				y, b := h.alloc(t, randn(r, rows*cols)), h.alloc(t, randn(r, cols))
				dy, dx := h.alloc(t, randn(r, rows*cols)), h.alloc(t, randn(r, rows*cols))
				s := h.alloc(t, randn(r, cols))
				h.Dev.BiasAct(y.dev, b.dev, rows, cols, relu)
				h.Ref.BiasAct(y.ref, b.ref, rows, cols, relu)
				h.check(t, "bias_act", y, 0)
				h.Dev.ReLUGrad(dx.dev, dy.dev, y.dev, rows*cols)
				h.Ref.ReLUGrad(dx.ref, dy.ref, y.ref, rows*cols)
				h.check(t, "relu_grad", dx, 0)
				h.Dev.ColSum(s.dev, dy.dev, rows, cols)
				h.Ref.ColSum(s.ref, dy.ref, rows, cols)
				h.check(t, "col_sum", s, 0)
				h.free(y, b, dy, dx, s)
			}
		}
	})
	t.Run("GatherRows", func(t *testing.T) {
		src := h.alloc(t, randn(r, 50*13))
		ix := make([]int32, 300)
		for i := range ix {
			ix[i] = int32(r.IntN(50))
		}
		idx := h.allocInt(t, ix)
		dst := h.alloc(t, make([]float32, 300*13))
		h.Dev.GatherRows(dst.dev, src.dev, idx.dev, 0, 300, 13)
		h.Ref.GatherRows(dst.ref, src.ref, idx.ref, 0, 300, 13)
		h.check(t, "gather_rows", dst, 0)
		h.Dev.GatherRows(dst.dev, src.dev, idx.dev, 17, 200, 13)
		h.Ref.GatherRows(dst.ref, src.ref, idx.ref, 17, 200, 13)
		h.check(t, "gather_rows", dst, 0)
		h.free(src, idx, dst)
	})
	t.Run("GatherShiftedDropoutMul", func(t *testing.T) {
		const ih, iw, imgs, rows = 28, 28, 20, 37
		src := h.alloc(t, randn(r, imgs*ih*iw))
		ix, sh := make([]int32, rows+5), make([]int32, 3*imgs)
		for i := range ix {
			ix[i] = int32(r.IntN(imgs))
		}
		for i := range sh {
			sh[i] = int32(r.IntN(7) - 3)
			if i%3 == 2 {
				sh[i] = int32(r.IntN(2)) // flipped or not
			}
		}
		idx, shifts := h.allocInt(t, ix), h.allocInt(t, sh)
		dst := h.alloc(t, randn(r, rows*ih*iw))
		h.Dev.GatherShifted(dst.dev, src.dev, idx.dev, shifts.dev, 5, rows, ih, iw)
		h.Ref.GatherShifted(dst.ref, src.ref, idx.ref, shifts.ref, 5, rows, ih, iw)
		h.check(t, "gather_shifted", dst, 0)
		mask := h.alloc(t, make([]float32, rows*ih*iw))
		h.Dev.DropoutMask(mask.dev, rows*ih*iw, 0.3, 1/0.7, 0xfeedface12345678)
		h.Ref.DropoutMask(mask.ref, rows*ih*iw, 0.3, 1/0.7, 0xfeedface12345678)
		h.check(t, "dropout_mask", mask, 0)
		h.Dev.Mul(dst.dev, mask.dev, rows*ih*iw)
		h.Ref.Mul(dst.ref, mask.ref, rows*ih*iw)
		h.check(t, "mul", dst, 0)
		h.free(src, idx, shifts, dst, mask)
	})
	t.Run("ConvPool", func(t *testing.T) {
		for _, g := range [][7]int{{3, 12, 12, 1, 5, 1, 0}, {2, 12, 12, 20, 5, 1, 0}, {1, 7, 9, 3, 3, 1, 0},
			{2, 12, 12, 3, 3, 2, 1}, {3, 7, 7, 5, 3, 1, 1}, {2, 14, 14, 6, 1, 2, 0}, {1, 9, 8, 2, 3, 2, 1}} {
			rows, ih, iw, c, k, st, pd := g[0], g[1], g[2], g[3], g[4], g[5], g[6]
			oh, ow := compute.ConvOut(ih, k, st, pd), compute.ConvOut(iw, k, st, pd)
			x := h.alloc(t, randn(r, rows*ih*iw*c))
			col := h.alloc(t, make([]float32, rows*oh*ow*k*k*c))
			h.Dev.Im2col(col.dev, x.dev, rows, ih, iw, c, k, st, pd)
			h.Ref.Im2col(col.ref, x.ref, rows, ih, iw, c, k, st, pd)
			h.check(t, "im2col", col, 0)
			dcol := h.alloc(t, randn(r, rows*oh*ow*k*k*c))
			h.Dev.Col2im(x.dev, dcol.dev, rows, ih, iw, c, k, st, pd)
			h.Ref.Col2im(x.ref, dcol.ref, rows, ih, iw, c, k, st, pd)
			h.check(t, "col2im", x, 0)
			for _, pg := range [][3]int{{2, 2, 0}, {3, 2, 1}, {3, 1, 1}, {2, 1, 0}} {
				pk, ps, pp := pg[0], pg[1], pg[2]
				po := rows * compute.ConvOut(ih, pk, ps, pp) * compute.ConvOut(iw, pk, ps, pp) * c
				py, arg := h.alloc(t, make([]float32, po)), h.alloc(t, make([]float32, po))
				h.Dev.MaxPool(py.dev, arg.dev, x.dev, rows, ih, iw, c, pk, ps, pp)
				h.Ref.MaxPool(py.ref, arg.ref, x.ref, rows, ih, iw, c, pk, ps, pp)
				h.check(t, "maxpool", py, 0)
				h.check(t, "maxpool arg", arg, 0)
				h.Dev.MaxPoolGrad(x.dev, py.dev, arg.dev, rows, ih, iw, c, pk, ps, pp)
				h.Ref.MaxPoolGrad(x.ref, py.ref, arg.ref, rows, ih, iw, c, pk, ps, pp)
				h.check(t, "maxpool_grad", x, 0)
				h.Dev.AvgPool(py.dev, x.dev, rows, ih, iw, c, pk, ps, pp)
				h.Ref.AvgPool(py.ref, x.ref, rows, ih, iw, c, pk, ps, pp)
				h.check(t, "avgpool", py, 0)
				h.Dev.AvgPoolGrad(x.dev, py.dev, rows, ih, iw, c, pk, ps, pp)
				h.Ref.AvgPoolGrad(x.ref, py.ref, rows, ih, iw, c, pk, ps, pp)
				h.check(t, "avgpool_grad", x, 0)
				h.free(py, arg)
			}
			h.free(x, col, dcol)
		}
	})
	t.Run("BatchNormAddPool", func(t *testing.T) {
		for _, sh := range [][2]int{{1, 3}, {300, 16}, {1000, 64}, {2 * 196 * 5, 32}} {
			rows, cols := sh[0], sh[1]
			xs := randn(r, rows*cols)
			for i := range xs {
				xs[i] = 3*xs[i] + 1.5 // a mean and variance far from 0 and 1
			}
			x, dz := h.alloc(t, xs), h.alloc(t, randn(r, rows*cols))
			mean, inv := h.alloc(t, make([]float32, cols)), h.alloc(t, make([]float32, cols))
			rm, rv := h.alloc(t, randn(r, cols)), h.alloc(t, make([]float32, cols))
			h.Dev.Fill(rv.dev, cols, 1)
			h.Ref.Fill(rv.ref, cols, 1)
			h.Dev.BNStats(mean.dev, inv.dev, rm.dev, rv.dev, x.dev, rows, cols, 0.1, 1e-5)
			h.Ref.BNStats(mean.ref, inv.ref, rm.ref, rv.ref, x.ref, rows, cols, 0.1, 1e-5)
			h.check(t, "bn_stats mean", mean, 0)
			h.check(t, "bn_stats inv", inv, 0)
			h.check(t, "bn_stats running mean", rm, 0)
			h.check(t, "bn_stats running var", rv, 0)
			g, b := h.alloc(t, randn(r, cols)), h.alloc(t, randn(r, cols))
			y := h.alloc(t, make([]float32, rows*cols))
			for _, relu := range []bool{false, true} {
				h.Dev.BNForward(y.dev, x.dev, mean.dev, inv.dev, g.dev, b.dev, rows, cols, relu)
				h.Ref.BNForward(y.ref, x.ref, mean.ref, inv.ref, g.ref, b.ref, rows, cols, relu)
				h.check(t, "bn_forward", y, 0)
			}
			dg, db, dx := h.alloc(t, make([]float32, cols)), h.alloc(t, make([]float32, cols)), h.alloc(t, make([]float32, rows*cols))
			for _, frozen := range []bool{false, true} {
				h.Dev.BNGrad(dx.dev, dg.dev, db.dev, dz.dev, x.dev, mean.dev, inv.dev, g.dev, rows, cols, frozen)
				h.Ref.BNGrad(dx.ref, dg.ref, db.ref, dz.ref, x.ref, mean.ref, inv.ref, g.ref, rows, cols, frozen)
				h.check(t, "bn_grad dgamma", dg, 0)
				h.check(t, "bn_grad dbeta", db, 0)
				h.check(t, "bn_grad dx", dx, 0)
			}
			h.Dev.BNScale(inv.dev, nil, rv.dev, cols, 1e-5)
			h.Ref.BNScale(inv.ref, nil, rv.ref, cols, 1e-5)
			h.check(t, "bn_scale 1/σ", inv, 0)
			h.Dev.BNScale(inv.dev, g.dev, rv.dev, cols, 1e-5)
			h.Ref.BNScale(inv.ref, g.ref, rv.ref, cols, 1e-5)
			h.check(t, "bn_scale γ/σ", inv, 0)
			if err := h.Dev.Upload(g.dev, []float32{0}); err != nil { // a pruned channel: s = 0
				t.Fatal(err)
			}
			if err := h.Ref.Upload(g.ref, []float32{0}); err != nil {
				t.Fatal(err)
			}
			h.Dev.DivCols(y.dev, x.dev, g.dev, rows, cols)
			h.Ref.DivCols(y.ref, x.ref, g.ref, rows, cols)
			h.check(t, "div_cols", y, 0)
			h.Dev.ScaleRows(y.dev, x.dev, mean.dev, cols, rows)
			h.Ref.ScaleRows(y.ref, x.ref, mean.ref, cols, rows)
			h.check(t, "scale_rows", y, 0)
			in, obs := h.alloc(t, make([]float32, rows*cols)), h.alloc(t, make([]float32, 5))
			for _, step := range []struct {
				observe bool
				bits    int
			}{{true, 8}, {true, 8}, {false, 8}, {true, 4}} {
				h.Dev.ActQuant(y.dev, in.dev, obs.dev, dz.dev, rows*cols, step.bits, 0.9, step.observe)
				h.Ref.ActQuant(y.ref, in.ref, obs.ref, dz.ref, rows*cols, step.bits, 0.9, step.observe)
				h.check(t, "act_quant", y, 0)
				h.check(t, "act_quant inside", in, 0)
				h.check(t, "act_quant observer", obs, 0)
				h.Dev.Mul(dz.dev, x.dev, rows*cols) // another batch
				h.Ref.Mul(dz.ref, x.ref, rows*cols)
			}
			h.free(in, obs)
			for _, relu := range []bool{false, true} {
				h.Dev.AddAct(y.dev, x.dev, dz.dev, rows*cols, relu)
				h.Ref.AddAct(y.ref, x.ref, dz.ref, rows*cols, relu)
				h.check(t, "add_act", y, 0)
			}
			h.Dev.Copy(dx.dev, y.dev, rows*cols)
			h.Ref.Copy(dx.ref, y.ref, rows*cols)
			h.check(t, "copy", dx, 0)
			if rows%5 == 0 { // rows/5 images of 5 positions
				p := h.alloc(t, make([]float32, rows/5*cols))
				h.Dev.GlobalAvgPool(p.dev, x.dev, rows/5, 5, cols)
				h.Ref.GlobalAvgPool(p.ref, x.ref, rows/5, 5, cols)
				h.check(t, "global_avgpool", p, 0)
				h.Dev.GlobalAvgPoolGrad(dx.dev, p.dev, rows/5, 5, cols)
				h.Ref.GlobalAvgPoolGrad(dx.ref, p.ref, rows/5, 5, cols)
				h.check(t, "global_avgpool_grad", dx, 0)
				h.free(p)
			}
			h.free(x, dz, mean, inv, rm, rv, g, b, y, dg, db, dx)
		}
	})
	t.Run("DepthwiseReLU6", func(t *testing.T) {
		for _, g := range [][7]int{{2, 8, 8, 5, 3, 1, 1}, {3, 9, 7, 16, 3, 2, 1}, {1, 28, 28, 24, 3, 2, 1}, {2, 6, 6, 3, 1, 1, 0}} {
			rows, ih, iw, c, k, st, pd := g[0], g[1], g[2], g[3], g[4], g[5], g[6]
			no := rows * compute.ConvOut(ih, k, st, pd) * compute.ConvOut(iw, k, st, pd) * c
			x, wt := h.alloc(t, randn(r, rows*ih*iw*c)), h.alloc(t, randn(r, c*k*k))
			y, dy := h.alloc(t, make([]float32, no)), h.alloc(t, randn(r, no))
			h.Dev.DepthwiseConv(y.dev, x.dev, wt.dev, rows, ih, iw, c, k, st, pd)
			h.Ref.DepthwiseConv(y.ref, x.ref, wt.ref, rows, ih, iw, c, k, st, pd)
			h.check(t, "depthwise", y, 0)
			h.Dev.DepthwiseConvGradW(wt.dev, dy.dev, x.dev, rows, ih, iw, c, k, st, pd)
			h.Ref.DepthwiseConvGradW(wt.ref, dy.ref, x.ref, rows, ih, iw, c, k, st, pd)
			h.check(t, "depthwise_grad_w", wt, 0)
			h.Dev.DepthwiseConvGradX(x.dev, dy.dev, wt.dev, rows, ih, iw, c, k, st, pd)
			h.Ref.DepthwiseConvGradX(x.ref, dy.ref, wt.ref, rows, ih, iw, c, k, st, pd)
			h.check(t, "depthwise_grad_x", x, 0)
			h.Dev.Copy(y.dev, dy.dev, no)
			h.Ref.Copy(y.ref, dy.ref, no)
			for i := 0; i < 3; i++ { // values around 0 and 6
				h.Dev.AddAct(y.dev, y.dev, y.dev, no, false)
				h.Ref.AddAct(y.ref, y.ref, y.ref, no, false)
			}
			h.Dev.ReLU6Grad(dy.dev, x.dev, y.dev, no)
			h.Ref.ReLU6Grad(dy.ref, x.ref, y.ref, no)
			h.check(t, "relu6_grad", dy, 0)
			h.Dev.ReLU6(y.dev, no)
			h.Ref.ReLU6(y.ref, no)
			h.check(t, "relu6", y, 0)
			h.free(x, wt, y, dy)
		}
	})
	t.Run("SoftmaxKD", func(t *testing.T) {
		for _, rows := range []int{1, 300, 1024} {
			for _, kd := range []bool{false, true} {
				cols := 10
				logits := randn(r, rows*cols)
				for i := range logits {
					logits[i] *= 4
				}
				lab := make([]int32, rows)
				for i := range lab {
					lab[i] = int32(r.IntN(cols))
				}
				lg, lb := h.alloc(t, logits), h.allocInt(t, lab)
				tc := h.alloc(t, randn(r, rows*cols))
				g, st := h.alloc(t, make([]float32, rows*cols)), h.alloc(t, []float32{1, 2, 3})
				var td, tr compute.Buffer
				if kd {
					td, tr = tc.dev, tc.ref
				}
				h.Dev.SoftmaxKD(g.dev, st.dev, lg.dev, lb.dev, td, rows, cols, 2, 0.5, 1/float32(rows))
				h.Ref.SoftmaxKD(g.ref, st.ref, lg.ref, lb.ref, tr, rows, cols, 2, 0.5, 1/float32(rows))
				// expf/logf against Go's exp/log rounded: a few ulps per term.
				h.check(t, "softmax grad", g, 1e-5)
				h.check(t, "softmax stats", st, 1e-5)
				h.free(lg, lb, tc, g, st)
			}
		}
	})
	t.Run("QuantAndPrune", func(t *testing.T) {
		for _, sh := range [][2]int{{1, 1}, {300, 784}, {10, 100}, {3, 1000}} {
			rows, cols := sh[0], sh[1]
			w := randn(r, rows*cols)
			if rows > 2 {
				for j := 0; j < cols; j++ {
					w[cols+j] = 0 // an all-zero row: scale 0
				}
			}
			x := h.alloc(t, w)
			am, q := h.alloc(t, make([]float32, rows)), h.alloc(t, make([]float32, rows*cols))
			h.Dev.RowAbsMax(am.dev, x.dev, rows, cols)
			h.Ref.RowAbsMax(am.ref, x.ref, rows, cols)
			h.check(t, "row_abs_max", am, 0)
			for _, bits := range []int{8, 4, 2} {
				qm := float32(int(1)<<(bits-1) - 1)
				h.Dev.FakeQuant(q.dev, x.dev, am.dev, rows, cols, qm)
				h.Ref.FakeQuant(q.ref, x.ref, am.ref, rows, cols, qm)
				h.check(t, fmt.Sprintf("fake_quant %d bits", bits), q, 0)
			}
			mask := h.alloc(t, make([]float32, rows*cols))
			h.Dev.Fill(mask.dev, rows*cols, 1)
			h.Ref.Fill(mask.ref, rows*cols, 1)
			h.check(t, "fill", mask, 0)
			pruned := make([]float32, rows*cols) // a mask dropping every third weight
			for i := range pruned {
				pruned[i] = float32(min(i%3, 1))
			}
			if err := h.Dev.Upload(mask.dev, pruned); err != nil {
				t.Fatal(err)
			}
			if err := h.Ref.Upload(mask.ref, pruned); err != nil {
				t.Fatal(err)
			}
			v, g := h.alloc(t, randn(r, rows*cols)), h.alloc(t, randn(r, rows*cols))
			for _, m := range []bool{false, true} {
				md, mr := mask.dev, mask.ref
				if !m {
					md, mr = nil, nil
				}
				h.Dev.SGD(x.dev, v.dev, g.dev, md, rows*cols, 0.05, 0.9, 1e-4)
				h.Ref.SGD(x.ref, v.ref, g.ref, mr, rows*cols, 0.05, 0.9, 1e-4)
				h.check(t, "sgd w", x, 0)
				h.check(t, "sgd v", v, 0)
			}
			h.free(x, am, q, mask, v, g)
		}
	})
	t.Run("Errors", func(t *testing.T) {
		b, err := h.Dev.Alloc(4)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Dev.Upload(b, make([]float32, 5)); err == nil {
			t.Error("upload of 5 elements into 4 did not fail")
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Error("a kernel on a too-short buffer did not panic")
				}
			}()
			h.Dev.Fill(b, 5, 1)
		}()
		h.Dev.Free(b)
		if err := h.Dev.Sync(); err != nil {
			t.Fatalf("device error after the suite: %v", err)
		}
	})
}
