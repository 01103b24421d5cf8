package host

import "github.com/lathe-ml/lathe/compute"

// window is a k×k window moved by stride over h×w images with pad zeros
// around, giving oh×ow outputs: the geometry of the convolutions and
// poolings, and the orders in which the kernels visit it.
type window struct{ h, w, k, stride, pad, oh, ow int }

func newWindow(h, w, k, stride, pad int) window {
	return window{h, w, k, stride, pad, compute.ConvOut(h, k, stride, pad), compute.ConvOut(w, k, stride, pad)}
}

// taps calls f for each tap t = ky·k+kx, in order, of output (oy, ox)'s
// window that falls inside the image, with the input position it reads.
func (g window) taps(oy, ox int, f func(t, iy, ix int)) {
	for ky := range g.k {
		iy := oy*g.stride - g.pad + ky
		if iy < 0 || iy >= g.h {
			continue
		}
		for kx := range g.k {
			if ix := ox*g.stride - g.pad + kx; ix >= 0 && ix < g.w {
				f(ky*g.k+kx, iy, ix)
			}
		}
	}
}

// covering calls f for each tap t = ky·k+kx, in order, through which an
// output's window reads input (y, x), with that output.
func (g window) covering(y, x int, f func(t, oy, ox int)) {
	at := func(i, t, n int) int { // the output reading i through tap t, or −1
		o := i + g.pad - t
		if o < 0 || o%g.stride != 0 || o/g.stride >= n {
			return -1
		}
		return o / g.stride
	}
	for ky := range g.k {
		oy := at(y, ky, g.oh)
		if oy < 0 {
			continue
		}
		for kx := range g.k {
			if ox := at(x, kx, g.ow); ox >= 0 {
				f(ky*g.k+kx, oy, ox)
			}
		}
	}
}

// outputs calls f for each output whose window covers input (y, x), in
// output order.
func (g window) outputs(y, x int, f func(oy, ox int)) {
	lo := func(i int) int { return max(0, (i+g.pad-g.k+g.stride)/g.stride) } // ⌈(i+pad−k+1)/stride⌉ for i+pad−k+1 ≥ 0
	for oy := lo(y); oy < g.oh && oy*g.stride-g.pad <= y; oy++ {
		if oy*g.stride-g.pad+g.k <= y {
			continue
		}
		for ox := lo(x); ox < g.ow && ox*g.stride-g.pad <= x; ox++ {
			if ox*g.stride-g.pad+g.k > x {
				f(oy, ox)
			}
		}
	}
}
