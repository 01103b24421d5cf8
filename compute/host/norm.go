package host

import (
	"math"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/internal/kernels"
)

// colSums64 adds, per column j of x (rows×cols), f(r, j) over the rows in
// blocks of compute.ColSumBlock (float64 sums, the blocks added in order)
// into a[j] and g(r, j) into b[j] (the same order as the CUDA kernels).
func colSums64(rows, cols int, a, b []float64, f func(i int) (float64, float64)) {
	pa, pb := make([]float64, cols), make([]float64, cols)
	for lo := 0; lo < rows; lo += compute.ColSumBlock {
		clear(pa)
		clear(pb)
		for r := lo; r < min(lo+compute.ColSumBlock, rows); r++ {
			for j := range cols {
				u, v := f(r*cols + j)
				pa[j] += u
				pb[j] += v
			}
		}
		for j := range cols {
			a[j] += pa[j]
			b[j] += pb[j]
		}
	}
}

// BNStats implements compute.Device.
func (d *Device) BNStats(mean, inv, rmean, rvar, x compute.Buffer, rows, cols int, momentum, eps float64) {
	defer d.open(mean, inv, rmean, rvar, x)()
	mf, vf, xf := d.f(mean), d.f(inv), d.f(x)
	need("bn_stats mean", mf, cols)
	need("bn_stats inv", vf, cols)
	need("bn_stats x", xf, rows*cols)
	var rm, rv []float32
	if rmean != nil {
		rm, rv = d.f(rmean), d.f(rvar)
		need("bn_stats running mean", rm, cols)
		need("bn_stats running var", rv, cols)
	}
	s, q := make([]float64, cols), make([]float64, cols)
	colSums64(rows, cols, s, q, func(i int) (float64, float64) {
		v := float64(xf[i])
		return v, v * v
	})
	n := float64(rows)
	for j := range cols {
		m := s[j] / n
		v := max(q[j]/n-m*m, 0)
		mf[j], vf[j] = float32(m), float32(1/math.Sqrt(v+eps))
		if rm == nil {
			continue
		}
		u := v
		if rows > 1 {
			u = v * n / (n - 1)
		}
		rm[j] = float32((1-momentum)*float64(rm[j]) + momentum*m)
		rv[j] = float32((1-momentum)*float64(rv[j]) + momentum*u)
	}
}

// BNScale implements compute.Device.
func (d *Device) BNScale(s, gamma, vr compute.Buffer, cols int, eps float64) {
	defer d.open(s, gamma, vr)()
	fs, fg, fv := d.f(s), d.f(gamma), d.f(vr)
	need("bn_scale s", fs, cols)
	need("bn_scale var", fv, cols)
	if fg != nil {
		need("bn_scale gamma", fg, cols)
	}
	for j := range cols {
		g := 1.0
		if fg != nil {
			g = float64(fg[j])
		}
		fs[j] = float32(g / math.Sqrt(float64(fv[j])+eps))
	}
}

// BNForward implements compute.Device.
func (d *Device) BNForward(y, x, mean, inv, gamma, beta compute.Buffer, rows, cols int, relu bool) {
	defer d.open(y, x, mean, inv, gamma, beta)()
	yf, xf, mf, vf, gf, bf := d.f(y), d.f(x), d.f(mean), d.f(inv), d.f(gamma), d.f(beta)
	need("bn y", yf, rows*cols)
	need("bn x", xf, rows*cols)
	for _, p := range [][]float32{mf, vf, gf, bf} {
		need("bn statistics", p, cols)
	}
	for r := range rows {
		for j := range cols {
			h := (xf[r*cols+j] - mf[j]) * vf[j]
			v := float32(h*gf[j]) + bf[j]
			if relu && !(v > 0) {
				v = 0
			}
			yf[r*cols+j] = v
		}
	}
}

// BNGrad implements compute.Device.
func (d *Device) BNGrad(dx, dgamma, dbeta, dz, x, mean, inv, gamma compute.Buffer, rows, cols int, frozen bool) {
	defer d.open(dx, dgamma, dbeta, dz, x, mean, inv, gamma)()
	xf, dg, db, zf, xs, mf, vf, gf := d.f(dx), d.f(dgamma), d.f(dbeta), d.f(dz), d.f(x), d.f(mean), d.f(inv), d.f(gamma)
	need("bn_grad dx", xf, rows*cols)
	need("bn_grad dz", zf, rows*cols)
	need("bn_grad x", xs, rows*cols)
	for _, p := range [][]float32{dg, db, mf, vf, gf} {
		need("bn_grad statistics", p, cols)
	}
	sb, sg := make([]float64, cols), make([]float64, cols)
	colSums64(rows, cols, sb, sg, func(i int) (float64, float64) {
		j := i % cols
		h := (xs[i] - mf[j]) * vf[j]
		return float64(zf[i]), float64(zf[i]) * float64(h)
	})
	n := float32(rows)
	k, b, g := make([]float32, cols), make([]float32, cols), make([]float32, cols)
	for j := range cols {
		db[j], dg[j] = float32(sb[j]), float32(sg[j])
		k[j] = float32(float64(gf[j]) * float64(vf[j]) / float64(rows))
		if !frozen {
			b[j], g[j] = db[j], dg[j]
		}
	}
	for r := range rows {
		for j := range cols {
			i := r*cols + j
			h := (xs[i] - mf[j]) * vf[j]
			t := float32(n*zf[i]) - b[j]
			t -= float32(h * g[j])
			xf[i] = k[j] * t
		}
	}
}

// AddAct implements compute.Device.
func (d *Device) AddAct(y, a, b compute.Buffer, n int, relu bool) {
	defer d.open(y, a, b)()
	yf, af, bf := d.f(y), d.f(a), d.f(b)
	need("add y", yf, n)
	need("add a", af, n)
	need("add b", bf, n)
	for i := range n {
		v := af[i] + bf[i]
		if relu && !(v > 0) {
			v = 0
		}
		yf[i] = v
	}
}

// Copy implements compute.Device.
func (d *Device) Copy(dst, src compute.Buffer, n int) {
	defer d.open(dst, src)()
	df, sf := d.f(dst), d.f(src)
	need("copy dst", df, n)
	need("copy src", sf, n)
	copy(df[:n], sf[:n])
}

// GlobalAvgPool implements compute.Device.
func (d *Device) GlobalAvgPool(y, x compute.Buffer, rows, hw, c int) {
	defer d.open(y, x)()
	yf, xf := d.f(y), d.f(x)
	need("gap y", yf, rows*c)
	need("gap x", xf, rows*hw*c)
	for r := range rows {
		for j := range c {
			var s float32
			for p := range hw {
				s += xf[(r*hw+p)*c+j]
			}
			yf[r*c+j] = s / float32(hw)
		}
	}
}

// GlobalAvgPoolGrad implements compute.Device.
func (d *Device) GlobalAvgPoolGrad(dx, dy compute.Buffer, rows, hw, c int) {
	defer d.open(dx, dy)()
	xf, yf := d.f(dx), d.f(dy)
	need("gap_grad dx", xf, rows*hw*c)
	need("gap_grad dy", yf, rows*c)
	for r := range rows {
		for p := range hw {
			for j := range c {
				xf[(r*hw+p)*c+j] = yf[r*c+j] / float32(hw)
			}
		}
	}
}

// ScaleRows implements compute.Device.
func (d *Device) ScaleRows(dst, x, s compute.Buffer, rows, cols int) {
	defer d.open(dst, x, s)()
	df, xf, sf := d.f(dst), d.f(x), d.f(s)
	need("scale_rows dst", df, rows*cols)
	need("scale_rows x", xf, rows*cols)
	need("scale_rows s", sf, rows)
	for r := range rows {
		for j := range cols {
			df[r*cols+j] = xf[r*cols+j] * sf[r]
		}
	}
}

// DivCols implements compute.Device.
func (d *Device) DivCols(dst, x, s compute.Buffer, rows, cols int) {
	defer d.open(dst, x, s)()
	df, xf, sf := d.f(dst), d.f(x), d.f(s)
	need("div_cols dst", df, rows*cols)
	need("div_cols x", xf, rows*cols)
	need("div_cols s", sf, cols)
	for r := range rows {
		for j := range cols {
			v := float32(0)
			if sf[j] != 0 {
				v = xf[r*cols+j] / sf[j]
			}
			df[r*cols+j] = v
		}
	}
}

// ActQuant implements compute.Device.
func (d *Device) ActQuant(y, inside, obs, x compute.Buffer, n, bits int, momentum float32, observe bool) {
	defer d.open(y, inside, obs, x)()
	yf, in, of, xf := d.f(y), d.f(inside), d.f(obs), d.f(x)
	need("act_quant y", yf, n)
	need("act_quant inside", in, n)
	need("act_quant obs", of, 5)
	need("act_quant x", xf, n)
	if observe {
		var lo, hi float32
		for _, v := range xf[:n] {
			if v < lo {
				lo = v
			}
			if v > hi {
				hi = v
			}
		}
		if of[2] == 0 {
			of[0], of[1], of[2] = lo, hi, 1
		} else {
			of[0] = momentum*of[0] + (1-momentum)*lo
			of[1] = momentum*of[1] + (1-momentum)*hi
		}
	}
	qmin, qmax := kernels.Range(bits, false)
	scale, zero := kernels.ScaleZero(false, qmin, qmax, of[0], of[1])
	of[3], of[4] = scale, float32(zero)
	inv, zf, lo, hi := 1/scale, float32(zero), float32(qmin), float32(qmax)
	for i, v := range xf[:n] {
		q, ok := kernels.RoundEven32(v*inv)+zf, float32(1)
		if q < lo {
			q, ok = lo, 0
		} else if q > hi {
			q, ok = hi, 0
		}
		yf[i], in[i] = (q-zf)*scale, ok
	}
}

// ReLU6 implements compute.Device.
func (d *Device) ReLU6(y compute.Buffer, n int) {
	defer d.open(y)()
	yf := d.f(y)
	need("relu6 y", yf, n)
	for i, v := range yf[:n] {
		if !(v > 0) {
			v = 0
		}
		yf[i] = min(v, 6)
	}
}

// ReLU6Grad implements compute.Device.
func (d *Device) ReLU6Grad(dx, dy, y compute.Buffer, n int) {
	defer d.open(dx, dy, y)()
	xf, df, yf := d.f(dx), d.f(dy), d.f(y)
	need("relu6_grad dx", xf, n)
	need("relu6_grad dy", df, n)
	need("relu6_grad y", yf, n)
	for i := range n {
		if v := yf[i]; v > 0 && v < 6 {
			xf[i] = df[i]
		} else {
			xf[i] = 0
		}
	}
}

// DepthwiseConv implements compute.Device.
func (d *Device) DepthwiseConv(y, x, wt compute.Buffer, rows, h, w, c, k, stride, pad int) {
	defer d.open(y, x, wt)()
	yf, xf, wf := d.f(y), d.f(x), d.f(wt)
	g := newWindow(h, w, k, stride, pad)
	need("depthwise y", yf, rows*g.oh*g.ow*c)
	need("depthwise x", xf, rows*h*w*c)
	need("depthwise wt", wf, c*k*k)
	for b := range rows {
		for oy := range g.oh {
			for ox := range g.ow {
				for j := range c {
					var s float32
					g.taps(oy, ox, func(t, iy, ix int) { s += float32(xf[((b*h+iy)*w+ix)*c+j] * wf[j*k*k+t]) })
					yf[((b*g.oh+oy)*g.ow+ox)*c+j] = s
				}
			}
		}
	}
}

// DepthwiseConvGradX implements compute.Device.
func (d *Device) DepthwiseConvGradX(dx, dy, wt compute.Buffer, rows, h, w, c, k, stride, pad int) {
	defer d.open(dx, dy, wt)()
	xf, yf, wf := d.f(dx), d.f(dy), d.f(wt)
	g := newWindow(h, w, k, stride, pad)
	need("depthwise_grad_x dx", xf, rows*h*w*c)
	need("depthwise_grad_x dy", yf, rows*g.oh*g.ow*c)
	need("depthwise_grad_x wt", wf, c*k*k)
	for b := range rows {
		for y := range h {
			for x := range w {
				for j := range c {
					var s float32
					g.covering(y, x, func(t, oy, ox int) { s += float32(yf[((b*g.oh+oy)*g.ow+ox)*c+j] * wf[j*k*k+t]) })
					xf[((b*h+y)*w+x)*c+j] = s
				}
			}
		}
	}
}

// DepthwiseConvGradW implements compute.Device: per block of positions,
// each tap's products summed in position order; the blocks' sums in order.
func (d *Device) DepthwiseConvGradW(dwt, dy, x compute.Buffer, rows, h, w, c, k, stride, pad int) {
	defer d.open(dwt, dy, x)()
	wf, yf, xf := d.f(dwt), d.f(dy), d.f(x)
	g := newWindow(h, w, k, stride, pad)
	taps, pos := k*k, rows*g.oh*g.ow
	need("depthwise_grad_w dwt", wf, c*taps)
	need("depthwise_grad_w dy", yf, pos*c)
	need("depthwise_grad_w x", xf, rows*h*w*c)
	part := make([]float32, c*taps)
	clear(wf[:c*taps])
	for lo := 0; lo < pos; lo += compute.ColSumBlock {
		clear(part)
		for r := lo; r < min(lo+compute.ColSumBlock, pos); r++ {
			b := r / (g.oh * g.ow)
			g.taps(r/g.ow%g.oh, r%g.ow, func(t, iy, ix int) {
				in := ((b*h+iy)*w + ix) * c
				for j := range c {
					part[j*taps+t] += float32(yf[r*c+j] * xf[in+j])
				}
			})
		}
		for i, v := range part {
			wf[i] += v
		}
	}
}
