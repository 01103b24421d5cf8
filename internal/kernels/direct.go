package kernels

import "sync"

// A direct convolution (no patch matrix): the filters are laid out in
// blocks of output channels, [block][ky][kx][c][chans], and a tile of
// output pixels × chans channels is accumulated in registers over every
// tap and input channel — AVX-512 where the CPU has it (Go elsewhere):
// 8 pixels × 32 channels, or 16 × 16 for a convolution of at most 16
// filters (7 or 14 pixels where that computes fewer past a row's end: rows
// of 7, 14, 28). The input is an image padded on every side (and on the right
// to whole tiles), so the kernel reads no bounds. Its sums run over
// (ky, kx, c) in that order, the order of Im2col's patch rows.
type DirectConv struct {
	Win    Window
	Out    int
	pixels int // a tile's pixels
	chans  int // and channels (a block's)
	blocks int
	w      []float32
	bias   []float32 // per block, zero beyond Out
	act    int       // ActNone, ActReLU or ActReLU6
	// The padded image's geometry: rows, columns (with the tail tile's).
	ph, pw int
}

// DirectTile is Row's scratch: a tile of either shape.
type DirectTile = [256]float32

// Activations the direct kernel applies to its outputs.
const (
	ActNone = iota
	ActReLU
	ActReLU6
)

// ActOf is the direct kernel's activation for an activation's name
// ("relu", "relu6"; anything else: none).
func ActOf(name string) int {
	switch name {
	case "relu":
		return ActReLU
	case "relu6":
		return ActReLU6
	}
	return ActNone
}

// NewDirectConv lays out filters w [out][K][K][C] (groups 1) for win,
// with bias b [out] (nil: none) and act (ActNone, ActReLU, ActReLU6)
// applied to every output.
func NewDirectConv(win Window, out int, w, b []float32, act int) *DirectConv {
	d := &DirectConv{Win: win, Out: out, pixels: 8, chans: 32, act: act}
	if out <= 16 {
		d.pixels, d.chans = 16, 16
	}
	// A tile of one pixel in 8 fewer where that computes fewer pixels
	// past the row's end (rows of 7, 14, 28).
	_, ow := win.Out()
	if p := d.pixels * 7 / 8; tilesOf(ow, p)*p < tilesOf(ow, d.pixels)*d.pixels {
		d.pixels = p
	}
	d.blocks = (out + d.chans - 1) / d.chans
	d.bias = make([]float32, d.blocks*d.chans)
	copy(d.bias, b)
	k, c := win.K, win.C
	d.w = make([]float32, d.blocks*k*k*c*d.chans)
	for o := range out {
		b, j := o/d.chans, o%d.chans
		for t := range k * k * c { // (ky, kx, c) in filter order
			d.w[(b*k*k*c+t)*d.chans+j] = w[o*k*k*c+t]
		}
	}
	tiles := tilesOf(ow, d.pixels)
	d.ph = win.H + 2*win.Pad
	d.pw = max(win.W+2*win.Pad, (tiles*d.pixels-1)*win.Stride+win.K)
	return d
}

// tilesOf is the tiles of p pixels a row of ow takes.
func tilesOf(ow, p int) int { return (ow + p - 1) / p }

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
	d.PadRows(dst, x, 0, d.Win.H)
}

// PadRows implements Rows.
func (d *DirectConv) PadRows(dst, x []float32, y0, y1 int) {
	g := d.Win
	row := d.pw * g.C
	if y0 == 0 {
		clear(dst[:g.Pad*row]) // the rows above
	}
	if y1 == g.H {
		clear(dst[(g.Pad+g.H)*row : d.ph*row]) // and below
	}
	for y := y0; y < y1; y++ {
		r := dst[(y+g.Pad)*row : (y+g.Pad+1)*row]
		clear(r[:g.Pad*g.C])
		copy(r[g.Pad*g.C:], x[y*g.W*g.C:(y+1)*g.W*g.C])
		clear(r[(g.Pad+g.W)*g.C:]) // the right border and the tail tile's columns
	}
}

// Rows is a convolution computed an output row at a time from a padded
// image of T (float32 for DirectConv, bytes for an integer kernel).
type Rows[T any] interface {
	// Shape gives the input's height and floats per image, the output's
	// rows and floats per row, the blocks of channels a row splits into,
	// and the padded image's length.
	Shape() (h, inLen, oh, rowLen, blocks, paddedLen int)
	// PadRows writes image rows [y0, y1) of x into padded (and the border
	// rows above and below when the range reaches them).
	PadRows(padded []T, x []float32, y0, y1 int)
	// RowBlocks computes the channels of blocks [b0, b1) of output row oy.
	RowBlocks(dst []float32, padded []T, oy, b0, b1 int, tile *DirectTile)
	// Grain is the fewest (row, block) units worth a thread of their own:
	// a few microseconds of sums, more than handing them over costs.
	Grain() int
}

// tilePool keeps the tiles between calls: a tile allocated afresh for
// each call (as a closure's variable escapes) lands wherever the heap has
// room, and a ResNet-20's calls ran 25 % slower when that was fresh memory
// (lathe bench, the same kernels) — a reused tile stays in cache.
var tilePool = sync.Pool{New: func() any { return new(DirectTile) }}

// Batch runs d over n images x [n][inLen] into y [n][oh·rowLen], each
// padded into padded (n·paddedLen): from 4 images on, image by image (each
// padded, then its rows, while it is in cache); below, the images' rows
// padded, then every block of channels of every row shared out, both split
// alike so that each thread mostly reads what it wrote. parallel is an
// engine's Parallel (f over [lo, hi) ranges of 0…count, at least grain at
// a time). after, when set, runs on each finished output row
// y[off:off+len(row)].
func Batch[T any](d Rows[T], parallel func(count, grain int, f func(lo, hi int)), y, x []float32, padded []T, n int, after func(off int, row []float32)) {
	h, isz, oh, rl, blocks, plen := d.Shape()
	if n >= 4 {
		parallel(n, 1, func(lo, hi int) {
			tile := tilePool.Get().(*DirectTile)
			defer tilePool.Put(tile)
			for s := lo; s < hi; s++ {
				p := padded[s*plen : (s+1)*plen]
				d.PadRows(p, x[s*isz:(s+1)*isz], 0, h)
				for oy := range oh {
					off := (s*oh + oy) * rl
					d.RowBlocks(y[off:off+rl], p, oy, 0, blocks, tile)
					if after != nil {
						after(off, y[off:off+rl])
					}
				}
			}
		})
		return
	}
	// A convolution too small to share runs on the calling thread, its
	// padding and after included.
	grain := 1
	if n*oh*blocks < 2*d.Grain() {
		grain = n * max(h, oh*blocks)
	}
	parallel(n*h, grain, func(lo, hi int) {
		for r := lo; r < hi; {
			s, y0 := r/h, r%h
			end := min(hi-s*h, h)
			d.PadRows(padded[s*plen:(s+1)*plen], x[s*isz:(s+1)*isz], y0, end)
			r += end - y0
		}
	})
	parallel(n*oh*blocks, max(grain, d.Grain()), func(lo, hi int) {
		tile := tilePool.Get().(*DirectTile)
		defer tilePool.Put(tile)
		for u := lo; u < hi; u++ {
			r, b := u/blocks, u%blocks
			s, oy := r/oh, r%oh
			off := (s*oh + oy) * rl
			d.RowBlocks(y[off:off+rl], padded[s*plen:(s+1)*plen], oy, b, b+1, tile)
		}
	})
	if after != nil {
		parallel(n*oh, grain, func(lo, hi int) {
			for r := lo; r < hi; r++ {
				after(r*rl, y[r*rl:(r+1)*rl])
			}
		})
	}
}

// Shape implements Rows.
func (d *DirectConv) Shape() (h, inLen, oh, rowLen, blocks, paddedLen int) {
	g := d.Win
	oh, ow := g.Out()
	return g.H, g.H * g.W * g.C, oh, ow * d.Out, d.blocks, d.PaddedLen()
}

// Grain implements Rows: units of about 400 000 multiply-adds (a few
// microseconds in the AVX-512 tiles).
func (d *DirectConv) Grain() int {
	_, ow := d.Win.Out()
	unit := ow * d.chans * d.Win.K * d.Win.K * d.Win.C
	return (400_000 + unit - 1) / unit
}

// Batch is the package's Batch with d.
func (d *DirectConv) Batch(parallel func(count, grain int, f func(lo, hi int)), y, x, padded []float32, n int, after func(off int, row []float32)) {
	if d.Win.Pad == 0 && d.pw == d.Win.W { // the images are their own padded form
		Batch[float32](unpadded{d}, parallel, y, x, x, n, after)
		return
	}
	Batch[float32](d, parallel, y, x, padded, n, after)
}

// unpadded is a convolution without padding whose rows its tiles cover
// exactly (a 1×1 convolution over rows of a multiple of its tile, such as
// a transformer's position-wise layers): it reads the images in place,
// with no padded copy — the same sums on the same floats.
type unpadded struct{ *DirectConv }

func (unpadded) PadRows([]float32, []float32, int, int) {}

// Row computes output row oy of a padded image into dst [OW][Out]: bias,
// sums, activation. Whole tiles are written in place, the others through
// tile.
func (d *DirectConv) Row(dst, padded []float32, oy int, tile *DirectTile) {
	d.RowBlocks(dst, padded, oy, 0, d.blocks, tile)
}

// RowBlocks implements Rows.
func (d *DirectConv) RowBlocks(dst, padded []float32, oy, b0, b1 int, tile *DirectTile) {
	g := d.Win
	_, ow := g.Out()
	k, c := g.K, g.C
	for x0 := 0; x0 < ow; x0 += d.pixels {
		base := (oy*g.Stride*d.pw + x0*g.Stride) * c
		n := min(d.pixels, ow-x0)
		for b := b0; b < b1; b++ {
			w := d.w[b*k*k*c*d.chans:]
			lo, hi := b*d.chans, min(d.Out, (b+1)*d.chans)
			out, stride, inPlace := tile[:], d.chans, n == d.pixels && hi-lo == d.chans
			if inPlace {
				out, stride = dst[x0*d.Out+lo:], d.Out
			}
			switch {
			case hasDirect && d.chans == 16:
				convTile16(&padded[base], g.Stride*c*4, d.pw*c*4, c, k, &w[0], &out[0], stride*4, &d.bias[lo], d.act, d.pixels)
			case hasDirect:
				convTile(&padded[base], g.Stride*c*4, d.pw*c*4, c, k, &w[0], &out[0], stride*4, &d.bias[lo], d.act, d.pixels)
			default:
				d.tileGo(out, stride, padded[base:], w, d.bias[lo:lo+d.chans])
			}
			switch {
			case inPlace:
			case d.chans == d.Out: // one block as wide as a pixel's outputs: one run
				copy(dst[x0*d.Out:(x0+n)*d.Out], tile[:n*d.chans])
			default:
				for p := range n {
					copy(dst[(x0+p)*d.Out+lo:(x0+p)*d.Out+hi], tile[p*d.chans:p*d.chans+hi-lo])
				}
			}
		}
	}
}

// tileGo is the kernel in Go: the same sums in the same order, pixel p's
// outputs at out[p·stride:].
func (d *DirectConv) tileGo(out []float32, stride int, x, w, bias []float32) {
	g := d.Win
	for p := range d.pixels {
		acc := out[p*stride : p*stride+d.chans]
		copy(acc, bias)
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
		for j, v := range acc {
			switch d.act {
			case ActReLU:
				acc[j] = max(v, 0)
			case ActReLU6:
				acc[j] = min(max(v, 0), 6)
			}
		}
	}
}
