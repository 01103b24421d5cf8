package infer

import (
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/internal/kernels"
)

// DirectInt8 is a convolution on integer codes without the patch matrix
// (direct8).
const DirectInt8 = "direct-int8"

// direct8 is the direct convolution on integer codes (AVX-512 VNNI): each
// image quantized once into a padded image of unsigned bytes (its border
// holds the code of 0.0), then tiles of 16 output pixels × 16 channels
// summed exactly in int32 over the taps — a pixel's K·C codes of a tap row
// are contiguous and taken 4 at a time — and turned into floats as the
// int8 kernel does: y = s_x·s_w·(Σ x·w − z_x·Σ w) + b. It takes symmetric
// weights (no weight zero point, as QAT's per-channel weights are); the
// sums are the int8 kernel's, so are the outputs, bit for bit.
type direct8 struct {
	win           kernels.Window
	out, blocks   int
	t4            int       // groups of 4 codes per tap row: ⌈K·C/4⌉
	w             []int8    // [block][ky][t4][16][4], zero beyond K·C and Out
	corr          []int32   // per output lane: z_x·Σ w
	scale, bias   []float32 // per output lane
	act           int
	in            *quantizer
	zx            int32 // the code of 0.0, made unsigned
	xOff          int32
	ph, pw        int // the padded image in pixels
	oh, ow, tiles int
	plen          int // bytes per padded image, with room for the last group's over-read
}

// newDirect8 builds the kernel from a layer's int8 kernel; nil where the
// weights have a zero point or VNNI is missing.
func newDirect8(l *Layer, k8 *int8Layer) *direct8 {
	if k8 == nil || !hasVNNI || l.Groups != 1 || l.Kind != string(graph.Conv) {
		return nil
	}
	for _, z := range k8.zw {
		if z != 0 {
			return nil
		}
	}
	win := l.directWindow()
	d := &direct8{win: win, out: l.Out, blocks: (l.Out + 15) / 16, act: kernels.ActOf(string(l.act)),
		in: k8.in, xOff: k8.xOff, zx: int32(k8.in.Zero) + k8.xOff}
	kc := win.K * win.C
	d.t4 = (kc + 3) / 4
	d.w = make([]int8, d.blocks*win.K*d.t4*64)
	n := d.blocks * 16
	d.corr, d.scale, d.bias = make([]int32, n), make([]float32, n), make([]float32, n)
	for r := range l.Out {
		b, lane := r/16, r%16
		for ky := range win.K {
			for j := range kc {
				d.w[((b*win.K+ky)*d.t4+j/4)*64+lane*4+j%4] = k8.w[k8.at(r, ky*kc+j)]
			}
		}
		d.corr[r], d.scale[r], d.bias[r] = d.zx*k8.rowSum[r], k8.scale[r], l.b[r]
	}
	d.oh, d.ow = win.Out()
	d.tiles = (d.ow + 15) / 16
	d.ph = win.H + 2*win.Pad
	d.pw = max(win.W+2*win.Pad, (d.tiles*16-1)*win.Stride+win.K)
	d.plen = (d.ph*d.pw*win.C + 4 + 63) &^ 63
	return d
}

// Shape implements kernels.Rows.
func (d *direct8) Shape() (h, inLen, oh, rowLen, blocks, paddedLen int) {
	g := d.win
	return g.H, g.H * g.W * g.C, d.oh, d.ow * d.out, d.blocks, d.plen
}

// PadRows implements kernels.Rows: codes of image rows [y0, y1), the
// border (and the tail tile's columns) the code of 0.0.
func (d *direct8) PadRows(dst []uint8, x []float32, y0, y1 int) {
	g, zx := d.win, uint8(d.zx)
	row := d.pw * g.C
	fill := func(b []uint8) {
		for i := range b {
			b[i] = zx
		}
	}
	if y0 == 0 {
		fill(dst[:g.Pad*row])
	}
	if y1 == g.H {
		fill(dst[(g.Pad+g.H)*row : d.plen])
	}
	q := d.in
	var sums [16]int32
	for y := y0; y < y1; y++ {
		r := dst[(y+g.Pad)*row : (y+g.Pad+1)*row]
		fill(r[:g.Pad*g.C])
		codes, xs := r[g.Pad*g.C:(g.Pad+g.W)*g.C], x[y*g.W*g.C:(y+1)*g.W*g.C]
		k := len(xs) &^ 15
		if k > 0 {
			quantizeU8(&xs[0], k, q.Inv, q.Qmin-q.Zero-1, q.Qmax-q.Zero+1, int32(q.Zero)+d.xOff,
				int32(q.Qmin)+d.xOff, int32(q.Qmax)+d.xOff, &codes[0], &sums)
		}
		for ; k < len(xs); k++ {
			codes[k] = uint8(int32(q.Code(xs[k])) + d.xOff)
		}
		fill(r[(g.Pad+g.W)*g.C:])
	}
}

// Grain implements kernels.Rows: units of about 1.6 million multiply-adds
// (VNNI sums four codes per lane where an FMA takes one float).
func (d *direct8) Grain() int {
	unit := d.tiles * 16 * 16 * d.win.K * d.t4 * 4
	return (1_600_000 + unit - 1) / unit
}

// RowBlocks implements kernels.Rows.
func (d *direct8) RowBlocks(dst []float32, padded []uint8, oy, b0, b1 int, _ *kernels.DirectTile) {
	g := d.win
	for t := range d.tiles {
		x0 := t * 16
		base := (oy*g.Stride*d.pw + x0*g.Stride) * g.C
		n := min(16, d.ow-x0)
		for b := b0; b < b1; b++ {
			lanes := min(16, d.out-b*16)
			convTileU8(&padded[base], g.Stride*g.C, d.pw*g.C, g.K, d.t4, &d.w[b*g.K*d.t4*64],
				&dst[x0*d.out+b*16], d.out*4, &d.corr[b*16], &d.scale[b*16], &d.bias[b*16], d.act, n, 1<<lanes-1)
		}
	}
}
