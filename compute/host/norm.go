package host

import (
	"math"

	"github.com/lathe-ml/lathe/compute"
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

// BNInv implements compute.Device.
func (d *Device) BNInv(inv, vr compute.Buffer, cols int, eps float64) {
	defer d.open(inv, vr)()
	fi, fv := d.f(inv), d.f(vr)
	need("bn_inv inv", fi, cols)
	need("bn_inv var", fv, cols)
	for j := range cols {
		fi[j] = float32(1 / math.Sqrt(float64(fv[j])+eps))
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
func (d *Device) BNGrad(dx, dgamma, dbeta, dz, x, mean, inv, gamma compute.Buffer, rows, cols int) {
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
	k := make([]float32, cols)
	for j := range cols {
		db[j], dg[j] = float32(sb[j]), float32(sg[j])
		k[j] = float32(float64(gf[j]) * float64(vf[j]) / float64(rows))
	}
	for r := range rows {
		for j := range cols {
			i := r*cols + j
			h := (xs[i] - mf[j]) * vf[j]
			t := float32(n*zf[i]) - db[j]
			t -= float32(h * dg[j])
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
