package kernels

// Depthwise is a depthwise convolution (as many groups as channels, one
// filter each) of one NHWC image, computed directly: each output pixel's
// channels accumulate tap by tap, the channels contiguous in the image and
// in the filters laid out [K·K][C] (Taps). Taps outside the image (the
// padding) are skipped. Sums run over the taps in (ky, kx) order.
type Depthwise struct{ Win Window }

// Taps lays out filters w [C][K][K] (lathe's [out][ky][kx][1]) as
// [K·K][C] into t.
func Taps(t, w []float32, c, k int) {
	for ch := range c {
		for tap := range k * k {
			t[tap*c+ch] = w[ch*k*k+tap]
		}
	}
}

// Untaps is Taps' inverse: t [K·K][C] into w [C][K][K].
func Untaps(w, t []float32, c, k int) {
	for ch := range c {
		for tap := range k * k {
			w[ch*k*k+tap] = t[tap*c+ch]
		}
	}
}

// taps calls f for every tap of output pixel (oy, ox) inside the image:
// the tap's index and the input pixel's.
func (d Depthwise) taps(oy, ox int, f func(tap, pix int)) {
	g := d.Win
	for ky := range g.K {
		iy := oy*g.Stride + ky - g.Pad
		if iy < 0 || iy >= g.H {
			continue
		}
		for kx := range g.K {
			ix := ox*g.Stride + kx - g.Pad
			if ix < 0 || ix >= g.W {
				continue
			}
			f(ky*g.K+kx, iy*g.W+ix)
		}
	}
}

// Forward sets y [OH·OW·C] to the convolution of x [H·W·C] with t.
func (d Depthwise) Forward(y, x, t []float32) {
	c := d.Win.C
	oh, ow := d.Win.Out()
	for oy := range oh {
		for ox := range ow {
			out := y[(oy*ow+ox)*c : (oy*ow+ox+1)*c]
			clear(out)
			d.taps(oy, ox, func(tap, pix int) { axpyMul(out, x[pix*c:(pix+1)*c], t[tap*c:(tap+1)*c]) })
		}
	}
}

// GradX sets dx [H·W·C] to the input gradient of output gradient dy.
func (d Depthwise) GradX(dx, dy, t []float32) {
	c := d.Win.C
	oh, ow := d.Win.Out()
	clear(dx)
	for oy := range oh {
		for ox := range ow {
			g := dy[(oy*ow+ox)*c : (oy*ow+ox+1)*c]
			d.taps(oy, ox, func(tap, pix int) { axpyMul(dx[pix*c:(pix+1)*c], g, t[tap*c:(tap+1)*c]) })
		}
	}
}

// GradW adds to dt [K·K][C] the filter gradient of dy for input x, for
// channels [c0, c1) (so that threads can own channel ranges and the sums
// keep their order).
func (d Depthwise) GradW(dt, dy, x []float32, c0, c1 int) {
	c := d.Win.C
	oh, ow := d.Win.Out()
	for oy := range oh {
		for ox := range ow {
			g := dy[(oy*ow+ox)*c+c0 : (oy*ow+ox)*c+c1]
			d.taps(oy, ox, func(tap, pix int) { axpyMul(dt[tap*c+c0:tap*c+c1], g, x[pix*c+c0:pix*c+c1]) })
		}
	}
}

// axpyMul adds a[i]·b[i] to dst[i].
func axpyMul(dst, a, b []float32) {
	a, b = a[:len(dst)], b[:len(dst)]
	i := 0
	for ; i+4 <= len(dst); i += 4 {
		dst[i] += a[i] * b[i]
		dst[i+1] += a[i+1] * b[i+1]
		dst[i+2] += a[i+2] * b[i+2]
		dst[i+3] += a[i+3] * b[i+3]
	}
	for ; i < len(dst); i++ {
		dst[i] += a[i] * b[i]
	}
}
