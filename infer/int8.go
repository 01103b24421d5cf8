package infer

import (
	"sync"

	"github.com/lathe-ml/lathe/checkpoint"
)

// The int8 kernel runs a layer whose weights are quantized and whose input
// is too — the image (pixel/255, exactly the codes 0…255 at scale 1/255)
// or a quantized activation — on the integer codes: unsigned input bytes
// times signed weight bytes summed exactly in int32 (AVX-512 VNNI where
// the CPU has it, Go elsewhere), then one scale per output channel:
//
//	y[r] = s_x·s_w[r] · Σ_k (x_k − z_x)(w_rk − z_w[r]) + b[r]
//
// the arithmetic the fake-quantized training graph models, with the sum
// exact instead of rounded step by step.
type int8Layer struct {
	k, k16, r16 int     // inputs, padded to 16; rows, padded to 16
	w           []int8  // codes − wOff, [r16/16][k16/4][16][4] (the VNNI layout)
	rowSum      []int32 // Σ_k w per row
	zw          []int32 // weight zero point − wOff, per row
	scale       []float32
	in          *quantizer // the input's quantization
	xOff        int32      // added to input codes to make them unsigned
	scratch     sync.Pool  // *int8Scratch, one per thread at work

	// The AVX2 form's weights, built on first use where VNNI is missing:
	// codes widened to 16 bits, [r16/8][k16/2][8][2].
	w16     []int16
	w16Once sync.Once
}

// pixelQuant is the model input's quantization: pixel/255 in [0, 1].
var pixelQuant = &quantizer{Scale: 1.0 / 255, Inv: 255, Zero: 0, Qmin: 0, Qmax: 255}

// newInt8 prepares the int8 kernel of a layer with quantized weights q
// (rows l.Out of l.In codes) and an input quantized by in; nil when the
// codes do not fit signed and unsigned bytes.
func newInt8(l *Layer, q *checkpoint.Quant, in *quantizer) *int8Layer {
	if q == nil || in == nil || q.Bits > 8 || len(q.Codes) != l.Out*l.In || (len(q.Scale) != 1 && len(q.Scale) != l.Out) {
		return nil
	}
	wOff := int32(0)
	for _, c := range q.Codes {
		if c > 127 {
			wOff = 128
		}
	}
	xOff := int32(0)
	if in.Qmin < 0 {
		xOff = 128
	}
	if in.Qmin+float32(xOff) < 0 || in.Qmax+float32(xOff) > 255 {
		return nil
	}
	k8 := &int8Layer{k: l.In, k16: (l.In + 15) / 16 * 16, r16: (l.Out + 15) / 16 * 16, in: in, xOff: xOff}
	k8.w = make([]int8, k8.r16*k8.k16)
	k8.rowSum, k8.zw, k8.scale = make([]int32, l.Out), make([]int32, l.Out), make([]float32, l.Out)
	for r := 0; r < l.Out; r++ {
		ch := 0
		if len(q.Scale) > 1 {
			ch = r
		}
		k8.zw[r] = q.Zero[ch] - wOff
		k8.scale[r] = in.Scale * q.Scale[ch]
		for k, c := range q.Codes[r*l.In : (r+1)*l.In] {
			v := c - wOff
			if v < -128 || v > 127 {
				return nil
			}
			k8.w[k8.at(r, k)] = int8(v)
			k8.rowSum[r] += v
		}
	}
	return k8
}

// widen builds the AVX2 form's weights from the VNNI layout.
func (k8 *int8Layer) widen() {
	k8.w16 = make([]int16, k8.r16*k8.k16)
	for r := 0; r < k8.r16; r++ {
		for k := 0; k < k8.k16; k++ {
			k8.w16[((r/8)*(k8.k16/2)+k/2)*16+(r%8)*2+k%2] = int16(k8.w[k8.at(r, k)])
		}
	}
}

// at is the index of weight (r, k) in the VNNI layout.
func (k8 *int8Layer) at(r, k int) int {
	return ((r/16)*(k8.k16/4)+k/4)*64 + (r%16)*4 + k%4
}

// int8Scratch is one thread's buffers: input codes and sums of a group
// of rows.
type int8Scratch struct {
	xq  []uint8
	x16 []int16
	acc []int32
}

// run computes y [rows, out] from x [rows, k], bias added (the caller
// applies the activation): rows split over the engine's threads, four at a
// time where VNNI runs.
func (k8 *int8Layer) run(m *Model, l *Layer, y, x []float32, rows int) {
	grain := max(4, 1<<17/max(1, k8.k16*k8.r16)) // ≈ 128 k multiply-adds a range at least
	m.eng.Parallel(rows, grain, func(lo, hi int) {
		sc, _ := k8.scratch.Get().(*int8Scratch)
		if sc == nil {
			sc = &int8Scratch{xq: make([]uint8, int8Group*k8.k16), x16: make([]int16, k8.k16), acc: make([]int32, int8Group*k8.r16)}
		}
		k8.rows(sc, l, y, x, lo, hi)
		k8.scratch.Put(sc)
	})
}

// int8Group is how many rows the VNNI kernel takes per pass.
const int8Group = 4

// rows computes rows [lo, hi) of run.
func (k8 *int8Layer) rows(sc *int8Scratch, l *Layer, y, x []float32, lo, hi int) {
	var xsum [int8Group]int32
	for s0 := lo; s0 < hi; s0 += int8Group {
		n := min(int8Group, hi-s0)
		for i := range n {
			xsum[i] = k8.quantize(sc.xq[i*k8.k16:(i+1)*k8.k16], x[(s0+i)*k8.k:(s0+i+1)*k8.k])
		}
		switch {
		case hasVNNI && n == int8Group:
			dotVNNI4(&sc.xq[0], k8.k16, &k8.w[0], k8.k16/4, k8.r16/16, &sc.acc[0])
		case hasVNNI:
			for i := range n {
				dotVNNI(&sc.xq[i*k8.k16], &k8.w[0], k8.k16/4, k8.r16/16, &sc.acc[i*k8.r16])
			}
		case hasAVX2:
			k8.w16Once.Do(k8.widen)
			for i := range n {
				for k, c := range sc.xq[i*k8.k16 : (i+1)*k8.k16] {
					sc.x16[k] = int16(c)
				}
				dotAVX2(&sc.x16[0], &k8.w16[0], k8.k16/2, k8.r16/8, &sc.acc[i*k8.r16])
			}
		default:
			for i := range n {
				xq, acc := sc.xq[i*k8.k16:i*k8.k16+k8.k], sc.acc[i*k8.r16:]
				for r := 0; r < l.Out; r++ {
					var a int32
					for k, c := range xq {
						a += int32(c) * int32(k8.w[k8.at(r, k)])
					}
					acc[r] = a
				}
			}
		}
		zx := int32(k8.in.Zero) + k8.xOff
		kz := int32(k8.k) * zx
		for i := range n {
			ys, acc := y[(s0+i)*l.Out:(s0+i+1)*l.Out], sc.acc[i*k8.r16:]
			for r := range ys {
				exact := acc[r] - zx*k8.rowSum[r] - k8.zw[r]*xsum[i] + kz*k8.zw[r]
				// Rounded after the product (no fused multiply-add): the
				// export's Cast, Mul and Add, step for step.
				ys[r] = float32(float32(exact)*k8.scale[r]) + l.b[r]
			}
		}
	}
}

// quantize writes one row's input codes (made unsigned) and returns their
// sum; the padding after k stays zero. With VNNI the bulk goes through
// quantizeU8, which clamps before converting (so that huge values saturate
// as the scalar path's do) and rounds to nearest even as quantizer.code does.
func (k8 *int8Layer) quantize(xq []uint8, x []float32) int32 {
	q := k8.in
	var sum int32
	k := 0
	if hasVNNI && len(x) >= 16 {
		k = len(x) / 16 * 16
		var sums [16]int32
		quantizeU8(&x[0], k, q.Inv, q.Qmin-q.Zero-1, q.Qmax-q.Zero+1, int32(q.Zero)+k8.xOff,
			int32(q.Qmin)+k8.xOff, int32(q.Qmax)+k8.xOff, &xq[0], &sums)
		for _, v := range sums {
			sum += v
		}
	}
	for ; k < len(x); k++ {
		c := int32(q.Code(x[k])) + k8.xOff
		xq[k] = uint8(c)
		sum += c
	}
	return sum
}
