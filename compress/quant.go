package compress

import (
	"github.com/lathe-ml/lathe/model"

	"github.com/lathe-ml/lathe/internal/kernels"
)

// QuantParams are the scales and zero points a tensor is quantized with:
// q = clamp(round(x·(1/scale)) + zero, qmin, qmax), x̂ = (q − zero)·scale,
// in float32, rounding halves to even (the arithmetic the inference runtime
// must repeat to give the same integers).
// The zero point is an integer, so 0 is exactly representable and pruned
// weights stay exactly zero.
type QuantParams struct {
	Spec       model.QuantSpec
	Scale      []float32 // one, or one per channel
	Zero       []int32
	QMin, QMax int32
}

// ParamsFromRange derives parameters from per-channel (or one) minimum and
// maximum values. The range is widened to contain 0.
func ParamsFromRange(spec model.QuantSpec, lo, hi []float32) QuantParams {
	qmin, qmax := spec.Range()
	p := QuantParams{Spec: spec, QMin: qmin, QMax: qmax, Scale: make([]float32, len(lo)), Zero: make([]int32, len(lo))}
	for c := range lo {
		p.Scale[c], p.Zero[c] = kernels.ScaleZero(spec.Symmetric, qmin, qmax, lo[c], hi[c])
	}
	return p
}

// ParamsFor derives parameters from a tensor's own minimum and maximum
// (per row of a [channels, …] tensor when per channel).
func ParamsFor(spec model.QuantSpec, data []float32, channels int) QuantParams {
	if !spec.PerChannel {
		channels = 1
	}
	per := len(data) / channels
	lo, hi := make([]float32, channels), make([]float32, channels)
	for c := 0; c < channels; c++ {
		lo[c], hi[c] = MinMax(data[c*per : (c+1)*per])
	}
	return ParamsFromRange(spec, lo, hi)
}

// MinMax returns the smallest and largest of x and 0 (NaNs are ignored).
// Plain comparisons: Go's min and max builtins order NaNs and signed zeros
// and cost several times more per element.
func MinMax(x []float32) (lo, hi float32) {
	var l0, l1, l2, l3, h0, h1, h2, h3 float32
	i := 0
	if n := len(x) &^ 7; hasAVX2 && n > 0 {
		// Eight lanes at a time, each as the loop below keeps its pairs.
		var lanes [16]float32
		minMax8(&x[0], n, &lanes)
		for k := range 8 {
			if lanes[k] < l0 {
				l0 = lanes[k]
			}
			if lanes[8+k] > h0 {
				h0 = lanes[8+k]
			}
		}
		i = n
	}
	// Four independent running pairs: the comparisons of one element do not
	// wait on the previous element's.
	for ; i+4 <= len(x); i += 4 {
		a, b, c, d := x[i], x[i+1], x[i+2], x[i+3]
		if a < l0 {
			l0 = a
		}
		if a > h0 {
			h0 = a
		}
		if b < l1 {
			l1 = b
		}
		if b > h1 {
			h1 = b
		}
		if c < l2 {
			l2 = c
		}
		if c > h2 {
			h2 = c
		}
		if d < l3 {
			l3 = d
		}
		if d > h3 {
			h3 = d
		}
	}
	for ; i < len(x); i++ {
		if x[i] < l0 {
			l0 = x[i]
		}
		if x[i] > h0 {
			h0 = x[i]
		}
	}
	for _, l := range [3]float32{l1, l2, l3} {
		if l < l0 {
			l0 = l
		}
	}
	for _, h := range [3]float32{h1, h2, h3} {
		if h > h0 {
			h0 = h
		}
	}
	return l0, h0
}

// channel returns the parameters' index for element i of a tensor of n
// elements.
func (p QuantParams) channel(i, n int) int {
	if len(p.Scale) == 1 {
		return 0
	}
	return i / (n / len(p.Scale))
}

// Quantize returns the integers for src (rounded half to even, clamped).
func (p QuantParams) Quantize(src []float32) []int32 {
	out := make([]int32, len(src))
	for i, v := range src {
		c := p.channel(i, len(src))
		q := roundEven32(v*(1/p.Scale[c])) + float32(p.Zero[c])
		out[i] = int32(min(max(q, float32(p.QMin)), float32(p.QMax)))
	}
	return out
}

// Dequantize maps integers back to values.
func (p QuantParams) Dequantize(dst []float32, q []int32) {
	for i, v := range q {
		c := p.channel(i, len(q))
		dst[i] = float32(v-p.Zero[c]) * p.Scale[c]
	}
}

// FakeQuant writes quantize-then-dequantize of src into dst, and, when
// inside is not nil, whether each element fell inside the clipping range
// (the straight-through estimator passes gradients only there). It reports
// whether every element did.
func (p QuantParams) FakeQuant(dst, src []float32, inside []bool) bool {
	return p.FakeQuantChannels(dst, src, inside, 0, len(p.Scale))
}

// FakeQuantChannels is FakeQuant restricted to channels [c0, c1), so that
// callers can split the work.
func (p QuantParams) FakeQuantChannels(dst, src []float32, inside []bool, c0, c1 int) bool {
	all := true
	per := len(src) / len(p.Scale)
	qmin, qmax := float32(p.QMin), float32(p.QMax)
	for c := c0; c < c1; c++ {
		sc, z := p.Scale[c], p.Zero[c]
		inv, zf := 1/sc, float32(z)
		lo, hi := c*per, (c+1)*per
		s, d := src[lo:hi], dst[lo:hi]
		d = d[:len(s)]
		if inside == nil {
			// Without flags to write, a channel whose integers all land in
			// range (always so for weights quantized by their own range)
			// needs no clamping: compute, and redo it clamped if any did not.
			qlo, qhi := qmin, qmax
			n := 0
			if hasAVX2 {
				n = len(s) &^ 7
			}
			if n > 0 {
				// The same arithmetic, eight at a time.
				lanes := [16]float32{qmin, qmin, qmin, qmin, qmin, qmin, qmin, qmin, qmax, qmax, qmax, qmax, qmax, qmax, qmax, qmax}
				fakeQuant8(&d[0], &s[0], n, inv, sc, zf, &lanes)
				for k := range 8 {
					if lanes[k] < qlo {
						qlo = lanes[k]
					}
					if lanes[8+k] > qhi {
						qhi = lanes[8+k]
					}
				}
			}
			for i, v := range s[n:] {
				i += n
				q := roundEven32(v*inv) + zf
				if q < qlo {
					qlo = q
				}
				if q > qhi {
					qhi = q
				}
				d[i] = (q - zf) * sc
			}
			if qlo >= qmin && qhi <= qmax {
				continue
			}
		}
		var in []bool
		if inside != nil {
			in = inside[lo:hi]
		}
		for i, v := range s {
			// Integers up to 2^24 are exact in float32, so rounding there
			// equals rounding in float64 for every value that can land in
			// [qmin, qmax].
			q := roundEven32(v*inv) + zf
			inRange := true
			if q < qmin {
				q, inRange = qmin, false
			} else if q > qmax {
				q, inRange = qmax, false
			}
			if in != nil {
				in[i] = inRange
			}
			all = all && inRange
			d[i] = (q - zf) * sc
		}
	}
	return all
}

// roundEven32 is kernels.RoundEven32: the rounding the inference runtime
// repeats.
func roundEven32(x float32) float32 { return kernels.RoundEven32(x) }
