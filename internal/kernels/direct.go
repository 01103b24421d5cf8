package kernels

// A direct convolution (no patch matrix): the filters are laid out in
// blocks of output channels, [block][ky][kx][c][chans], and a tile of
// output pixels × chans channels is accumulated in registers over every
// tap and input channel — AVX-512 where the CPU has it (Go elsewhere):
// 8 pixels × 32 channels, or 16 × 16 for a convolution of at most 16
// filters. The input is an image padded on every side (and on the right
// to whole tiles), so the kernel reads no bounds. Its sums run over
// (ky, kx, c) in that order, the order of Im2col's patch rows.
type DirectConv struct {
	Win    Window
	Out    int
	pixels int // a tile's pixels
	chans  int // and channels (a block's)
	blocks int
	w      []float32
	// The padded image's geometry: rows, columns (with the tail tile's).
	ph, pw int
}

// DirectTile is Row's scratch: a tile of either shape.
type DirectTile = [256]float32

// NewDirectConv lays out filters w [out][K][K][C] (groups 1) for win.
func NewDirectConv(win Window, out int, w []float32) *DirectConv {
	d := &DirectConv{Win: win, Out: out, pixels: 8, chans: 32}
	if out <= 16 {
		d.pixels, d.chans = 16, 16
	}
	d.blocks = (out + d.chans - 1) / d.chans
	k, c := win.K, win.C
	d.w = make([]float32, d.blocks*k*k*c*d.chans)
	for o := range out {
		b, j := o/d.chans, o%d.chans
		for t := range k * k * c { // (ky, kx, c) in filter order
			d.w[(b*k*k*c+t)*d.chans+j] = w[o*k*k*c+t]
		}
	}
	_, ow := win.Out()
	tiles := (ow + d.pixels - 1) / d.pixels
	d.ph = win.H + 2*win.Pad
	d.pw = max(win.W+2*win.Pad, (tiles*d.pixels-1)*win.Stride+win.K)
	return d
}

// HasDirect says whether the direct kernel runs in SIMD here (elsewhere
// its Go form is slower than a patch matrix and a GEMM).
func HasDirect() bool { return hasDirect }

// Weights is the floats of the filters in the kernel's layout.
func (d *DirectConv) Weights() int { return len(d.w) }

// PaddedLen is the floats of one padded image.
func (d *DirectConv) PaddedLen() int { return d.ph * d.pw * d.Win.C }

// Pad writes image x (H×W×C) into dst (PaddedLen floats) with its zero
// border.
func (d *DirectConv) Pad(dst, x []float32) {
	g := d.Win
	clear(dst)
	for y := range g.H {
		copy(dst[((y+g.Pad)*d.pw+g.Pad)*g.C:], x[y*g.W*g.C:(y+1)*g.W*g.C])
	}
}

// Row computes output row oy of a padded image into dst [OW][Out] (sums
// only: no bias), with tile as scratch.
func (d *DirectConv) Row(dst, padded []float32, oy int, tile *DirectTile) {
	g := d.Win
	_, ow := g.Out()
	k, c := g.K, g.C
	for x0 := 0; x0 < ow; x0 += d.pixels {
		base := (oy*g.Stride*d.pw + x0*g.Stride) * c
		n := min(d.pixels, ow-x0)
		for b := range d.blocks {
			w := d.w[b*k*k*c*d.chans:]
			switch {
			case hasDirect && d.chans == 16:
				convTile16(&padded[base], g.Stride*c*4, d.pw*c*4, c, k, &w[0], &tile[0])
			case hasDirect:
				convTile(&padded[base], g.Stride*c*4, d.pw*c*4, c, k, &w[0], &tile[0])
			default:
				d.tileGo(tile, padded[base:], w)
			}
			lo, hi := b*d.chans, min(d.Out, (b+1)*d.chans)
			for p := range n {
				copy(dst[(x0+p)*d.Out+lo:(x0+p)*d.Out+hi], tile[p*d.chans:p*d.chans+hi-lo])
			}
		}
	}
}

// tileGo is the kernel in Go: the same sums in the same order.
func (d *DirectConv) tileGo(tile *DirectTile, x, w []float32) {
	g := d.Win
	clear(tile[:])
	for p := range d.pixels {
		acc := tile[p*d.chans : (p+1)*d.chans]
		t := 0
		for ky := range g.K {
			row := x[(ky*d.pw+p*g.Stride)*g.C:]
			for kx := range g.K {
				px := row[kx*g.C : (kx+1)*g.C]
				for _, v := range px {
					ws := w[t*d.chans : (t+1)*d.chans]
					for j := range acc {
						acc[j] += v * ws[j]
					}
					t++
				}
			}
		}
	}
}
