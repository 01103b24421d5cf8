package onnx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/lathe-ml/lathe/internal/onnxpb"
)

// ONNX element types (TensorProto.DataType) the importer reads.
const (
	typeFloat  = 1
	typeInt32  = 6
	typeInt64  = 7
	typeDouble = 11
	typeBool   = 9
)

// maxElems bounds a constant's elements and an input's features: a file
// that claims more is refused before anything that size is allocated.
const maxElems = 1 << 26

// batch stands for the batch dimension in a shape computed from a value
// (Shape of x: [batch, C, H, W]); a Reshape reading it keeps the batch.
// Shape arithmetic may multiply it by a constant: batch·k is batchTimes(k)
// (k ≥ 1; batchTimes(1) = batch), as nn.MultiheadAttention's export folds
// the heads into the batch ([T, batch·H, dh]).
const batch = math.MinInt64 / 2

// maxFactor bounds k in batchTimes(k).
const maxFactor = 1 << 40

func batchTimes(k int64) int64 { return batch - (k - 1) }

// batchFactor is k where v = batchTimes(k).
func batchFactor(v int64) (int64, bool) {
	if v <= batch && v > batch-maxFactor {
		return batch - v + 1, true
	}
	return 0, false
}

// intOp is a binary operator on integers that follows the batch's
// multiples; other arithmetic on the batch is refused.
func intOp(op string, x, y int64) (int64, error) {
	kx, sx := batchFactor(x)
	ky, sy := batchFactor(y)
	switch {
	case !sx && !sy:
		switch op {
		case "Add":
			return x + y, nil
		case "Sub":
			return x - y, nil
		case "Mul":
			return x * y, nil
		case "Div":
			if y == 0 {
				return 0, errors.New("an integer division by zero")
			}
			return x / y, nil
		}
		return int64(binaryOps[op](float64(x), float64(y))), nil
	case op == "Mul" && sx != sy:
		c, k := y, kx
		if sy {
			c, k = x, ky
		}
		if c > 0 && k*c < maxFactor {
			return batchTimes(k * c), nil
		}
	case op == "Div" && sx && !sy && y > 0 && kx%y == 0:
		return batchTimes(kx / y), nil
	}
	return 0, fmt.Errorf("%s of the batch size (lathe follows only its multiples by constants)", op)
}

// tensor is a constant: an initializer, a Constant node's value or what
// folding computed from them. Floats live in f, integers (and booleans)
// in i.
type tensor struct {
	dims  []int
	f     []float32
	i     []int64
	isInt bool
}

func (t *tensor) size() int {
	n := 1
	for _, d := range t.dims {
		n *= d
	}
	return n
}

// floats returns the values as floats (integers converted).
func (t *tensor) floats() []float32 {
	if !t.isInt {
		return t.f
	}
	out := make([]float32, len(t.i))
	for k, v := range t.i {
		out[k] = float32(v)
	}
	return out
}

// ints returns the values as integers (floats truncated).
func (t *tensor) ints() []int64 {
	if t.isInt {
		return t.i
	}
	out := make([]int64, len(t.f))
	for k, v := range t.f {
		out[k] = int64(v)
	}
	return out
}

// scalar is a one-element tensor's value.
func (t *tensor) scalar() (float64, bool) {
	if t.size() != 1 {
		return 0, false
	}
	if t.isInt {
		return float64(t.i[0]), true
	}
	return float64(t.f[0]), true
}

// readTensor decodes a TensorProto of float, double, int32, int64 or
// bool elements, raw or in its typed fields; data stored outside the file
// is refused.
func readTensor(p *onnxpb.TensorProto) (*tensor, error) {
	if len(p.GetExternalData()) > 0 || p.GetDataLocation() == onnxpb.TensorProto_EXTERNAL {
		return nil, fmt.Errorf("tensor %q keeps its data in an external file, which lathe does not read (save the model with its weights inside)", p.GetName())
	}
	t := &tensor{}
	n := 1
	for _, d := range p.GetDims() {
		if d < 0 || d > maxElems || (d > 0 && n > maxElems/int(d)) {
			return nil, fmt.Errorf("tensor %q has dimensions %v (at most %d values)", p.GetName(), p.GetDims(), maxElems)
		}
		t.dims = append(t.dims, int(d))
		n *= int(d)
	}
	raw := p.GetRawData()
	width := map[int32]int{typeFloat: 4, typeInt32: 4, typeInt64: 8, typeDouble: 8, typeBool: 1}[p.GetDataType()]
	if width == 0 {
		return nil, fmt.Errorf("tensor %q has element type %d (lathe reads float, double, int32, int64 and bool)", p.GetName(), p.GetDataType())
	}
	if raw != nil && len(raw) != n*width {
		return nil, fmt.Errorf("tensor %q holds %d bytes for %v %d-byte elements", p.GetName(), len(raw), t.dims, width)
	}
	if raw == nil {
		have := map[int32]int{typeFloat: len(p.GetFloatData()), typeDouble: len(p.GetDoubleData()), typeInt64: len(p.GetInt64Data()),
			typeInt32: len(p.GetInt32Data()), typeBool: len(p.GetInt32Data())}[p.GetDataType()]
		if have != n {
			return nil, fmt.Errorf("tensor %q holds %d values for shape %v", p.GetName(), have, t.dims)
		}
	}
	switch p.GetDataType() {
	case typeFloat:
		t.f = make([]float32, n)
		if raw != nil {
			for k := range t.f {
				t.f[k] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*k:]))
			}
		} else if len(p.GetFloatData()) == n {
			copy(t.f, p.GetFloatData())
		} else {
			return nil, fmt.Errorf("tensor %q holds %d floats for shape %v", p.GetName(), len(p.GetFloatData()), t.dims)
		}
	case typeDouble:
		t.f = make([]float32, n)
		for k := range t.f {
			if raw != nil {
				t.f[k] = float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[8*k:])))
			} else if len(p.GetDoubleData()) == n {
				t.f[k] = float32(p.GetDoubleData()[k])
			} else {
				return nil, fmt.Errorf("tensor %q holds %d doubles for shape %v", p.GetName(), len(p.GetDoubleData()), t.dims)
			}
		}
	default:
		t.isInt, t.i = true, make([]int64, n)
		for k := range t.i {
			switch {
			case raw != nil && width == 8:
				t.i[k] = int64(binary.LittleEndian.Uint64(raw[8*k:]))
			case raw != nil && width == 4:
				t.i[k] = int64(int32(binary.LittleEndian.Uint32(raw[4*k:])))
			case raw != nil:
				t.i[k] = int64(raw[k])
			case p.GetDataType() == typeInt64 && len(p.GetInt64Data()) == n:
				t.i[k] = p.GetInt64Data()[k]
			case len(p.GetInt32Data()) == n:
				t.i[k] = int64(p.GetInt32Data()[k])
			default:
				return nil, fmt.Errorf("tensor %q holds too few integers for shape %v", p.GetName(), t.dims)
			}
		}
	}
	return t, nil
}

// fits says whether a shape holds at most maxElems values.
func fits(dims []int) bool {
	n := 1
	for _, d := range dims {
		if d < 0 || (d > 0 && n > maxElems/d) {
			return false
		}
		n *= d
	}
	return true
}

// strides are a shape's row-major strides.
func strides(dims []int) []int {
	s := make([]int, len(dims))
	acc := 1
	for k := len(dims) - 1; k >= 0; k-- {
		s[k], acc = acc, acc*dims[k]
	}
	return s
}

// gather picks, along axis, the entries idx of t (a scalar index drops
// the axis).
func (t *tensor) gather(idx *tensor, axis int) (*tensor, error) {
	if axis < 0 {
		axis += len(t.dims)
	}
	if axis < 0 || axis >= len(t.dims) {
		return nil, fmt.Errorf("axis %d of a %d-dimensional tensor", axis, len(t.dims))
	}
	ix := idx.ints()
	outer, inner := 1, 1
	for _, d := range t.dims[:axis] {
		outer *= d
	}
	for _, d := range t.dims[axis+1:] {
		inner *= d
	}
	n := t.dims[axis]
	out := &tensor{isInt: t.isInt}
	out.dims = append(append(slices.Clone(t.dims[:axis]), idx.dims...), t.dims[axis+1:]...)
	if !fits(out.dims) {
		return nil, fmt.Errorf("a result of shape %v (at most %d values)", out.dims, maxElems)
	}
	for o := range outer {
		for _, j := range ix {
			if j < 0 {
				j += int64(n)
			}
			if j < 0 || j >= int64(n) {
				return nil, fmt.Errorf("index %d out of range [0, %d)", j, n)
			}
			base := (o*n + int(j)) * inner
			if t.isInt {
				out.i = append(out.i, t.i[base:base+inner]...)
			} else {
				out.f = append(out.f, t.f[base:base+inner]...)
			}
		}
	}
	return out, nil
}

// transpose permutes t's axes.
func (t *tensor) transpose(perm []int64) (*tensor, error) {
	r := len(t.dims)
	if len(perm) == 0 {
		for k := r - 1; k >= 0; k-- {
			perm = append(perm, int64(k))
		}
	}
	if len(perm) != r {
		return nil, fmt.Errorf("permutation %v of a %d-dimensional tensor", perm, r)
	}
	out := &tensor{isInt: t.isInt, dims: make([]int, r)}
	for k, p := range perm {
		if p < 0 || int(p) >= r {
			return nil, fmt.Errorf("permutation %v of a %d-dimensional tensor", perm, r)
		}
		out.dims[k] = t.dims[p]
	}
	src, dst := strides(t.dims), strides(out.dims)
	n := t.size()
	out.f, out.i = make([]float32, 0, n), make([]int64, 0, n)
	if t.isInt {
		out.i = out.i[:n]
	} else {
		out.f = out.f[:n]
	}
	for k := range n {
		off, rem := 0, k
		for a := range r {
			c := rem / dst[a]
			rem %= dst[a]
			off += c * src[perm[a]]
		}
		if t.isInt {
			out.i[k] = t.i[off]
		} else {
			out.f[k] = t.f[off]
		}
	}
	return out, nil
}

// broadcast applies op elementwise under NumPy's broadcasting: on
// integers (both inputs integers) by intOp, else on floats by binaryOps.
func broadcast(a, b *tensor, op string) (*tensor, error) {
	r := max(len(a.dims), len(b.dims))
	pad := func(d []int) []int { return append(slices.Repeat([]int{1}, r-len(d)), d...) }
	ad, bd := pad(a.dims), pad(b.dims)
	out := &tensor{isInt: a.isInt && b.isInt, dims: make([]int, r)}
	for k := range r {
		switch {
		case ad[k] == bd[k] || bd[k] == 1:
			out.dims[k] = ad[k]
		case ad[k] == 1:
			out.dims[k] = bd[k]
		default:
			return nil, fmt.Errorf("shapes %v and %v do not broadcast", a.dims, b.dims)
		}
	}
	if !fits(out.dims) {
		return nil, fmt.Errorf("a result of shape %v (at most %d values)", out.dims, maxElems)
	}
	as, bs, os := strides(ad), strides(bd), strides(out.dims)
	af, bf := a.floats(), b.floats()
	n := out.size()
	for k := range n {
		ia, ib, rem := 0, 0, k
		for d := range r {
			c := rem / os[d]
			rem %= os[d]
			if ad[d] > 1 {
				ia += c * as[d]
			}
			if bd[d] > 1 {
				ib += c * bs[d]
			}
		}
		if out.isInt {
			v, err := intOp(op, a.i[ia], b.i[ib])
			if err != nil {
				return nil, err
			}
			out.i = append(out.i, v)
		} else {
			out.f = append(out.f, float32(binaryOps[op](float64(af[ia]), float64(bf[ib]))))
		}
	}
	return out, nil
}
