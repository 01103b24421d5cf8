package onnx

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/lathe-ml/lathe/internal/onnxpb"
)

// foldable are the operators computed at import when all their inputs
// are constants (initializer-only subgraphs, and the shape arithmetic
// PyTorch exports around a Reshape).
var foldable = map[string]bool{
	"Identity": true, "Cast": true, "Unsqueeze": true, "Squeeze": true, "Concat": true, "Gather": true,
	"Reshape": true, "Transpose": true, "Add": true, "Sub": true, "Mul": true, "Div": true, "Pow": true,
	"Sqrt": true, "Neg": true, "Shape": true, "Slice": true,
}

var binaryOps = map[string]func(x, y float64) float64{
	"Add": func(x, y float64) float64 { return x + y },
	"Sub": func(x, y float64) float64 { return x - y },
	"Mul": func(x, y float64) float64 { return x * y },
	"Div": func(x, y float64) float64 { return x / y },
	"Pow": math.Pow,
}

// fold computes a node whose inputs are all constants.
func fold(n *onnxpb.NodeProto, in []*tensor) (*tensor, error) {
	op := n.GetOpType()
	for k, t := range in {
		if t == nil && (k == 0 || binaryOps[op] != nil || op == "Concat" || op == "Gather" || op == "Reshape") {
			return nil, fmt.Errorf("input %d is missing", k)
		}
	}
	if binaryOps[op] != nil {
		if len(in) != 2 {
			return nil, fmt.Errorf("%d inputs", len(in))
		}
		return broadcast(in[0], in[1], op) // integers: x/y truncates, as ONNX divides them
	}
	if len(in) == 0 {
		return nil, fmt.Errorf("no inputs")
	}
	x := in[0]
	switch op {
	case "Identity":
		return x, nil
	case "Cast":
		to := attrInt(n, "to", typeFloat)
		out := &tensor{dims: slices.Clone(x.dims)}
		switch to {
		case typeFloat, typeDouble:
			out.f = x.floats()
		case typeInt32, typeInt64, typeBool:
			out.isInt, out.i = true, x.ints()
		default:
			return nil, fmt.Errorf("cast to element type %d", to)
		}
		return out, nil
	case "Sqrt", "Neg":
		out := &tensor{dims: slices.Clone(x.dims)}
		for _, v := range x.floats() {
			if op == "Sqrt" {
				out.f = append(out.f, float32(math.Sqrt(float64(v))))
			} else {
				out.f = append(out.f, -v)
			}
		}
		if op == "Neg" && x.isInt {
			out.isInt, out.f, out.i = true, nil, slices.Clone(x.i)
			for k := range out.i {
				out.i[k] = -out.i[k]
			}
		}
		return out, nil
	case "Shape":
		out := &tensor{isInt: true, dims: []int{len(x.dims)}}
		for _, d := range x.dims {
			out.i = append(out.i, int64(d))
		}
		return out, nil
	case "Gather":
		if len(in) != 2 {
			return nil, fmt.Errorf("%d inputs", len(in))
		}
		return x.gather(in[1], int(attrInt(n, "axis", 0)))
	case "Transpose":
		return x.transpose(attrInts(n, "perm"))
	case "Unsqueeze", "Squeeze":
		return squeeze(n, in)
	case "Concat":
		return concat(in, int(attrInt(n, "axis", 0)))
	case "Slice":
		return slice(n, in)
	case "Reshape":
		if len(in) != 2 {
			return nil, fmt.Errorf("%d inputs", len(in))
		}
		dims, err := reshapeDims(x.dims, in[1].ints(), attrInt(n, "allowzero", 0) != 0)
		if err != nil {
			return nil, err
		}
		out := *x
		out.dims = dims
		return &out, nil
	}
	return nil, fmt.Errorf("%s is not folded", op)
}

// slice is Slice of a constant (a learned position table cut to the
// sequence's length, say): starts, ends, axes and steps from attributes
// (opsets before 10) or inputs 1 to 4.
func slice(n *onnxpb.NodeProto, in []*tensor) (*tensor, error) {
	x := in[0]
	r := len(x.dims)
	starts, ends, axes, steps := attrInts(n, "starts"), attrInts(n, "ends"), attrInts(n, "axes"), []int64(nil)
	for k, dst := range []*[]int64{&starts, &ends, &axes, &steps} {
		if k+1 < len(in) && in[k+1] != nil {
			*dst = in[k+1].ints()
		}
	}
	if axes == nil {
		for a := range starts {
			axes = append(axes, int64(a))
		}
	}
	if steps == nil {
		steps = slices.Repeat([]int64{1}, len(starts))
	}
	if len(ends) != len(starts) || len(axes) != len(starts) || len(steps) != len(starts) {
		return nil, fmt.Errorf("starts %v, ends %v, axes %v and steps %v differ in length", starts, ends, axes, steps)
	}
	lo, step, count := make([]int, r), slices.Repeat([]int{1}, r), slices.Clone(x.dims)
	for k, a := range axes {
		if a < 0 {
			a += int64(r)
		}
		if a < 0 || a >= int64(r) || steps[k] == 0 {
			return nil, fmt.Errorf("axis %d, step %d of a rank-%d constant", axes[k], steps[k], r)
		}
		if _, ok := batchFactor(starts[k]); ok {
			return nil, errors.New("a constant sliced by the batch size")
		}
		if _, ok := batchFactor(ends[k]); ok {
			return nil, errors.New("a constant sliced by the batch size")
		}
		d, st := int64(x.dims[a]), steps[k]
		b, e := starts[k], ends[k]
		if b < 0 {
			b += d
		}
		if e < 0 {
			e += d
		}
		if st > 0 {
			b, e = min(max(b, 0), d), min(max(e, 0), d)
		} else {
			b, e = min(max(b, 0), d-1), min(max(e, -1), d-1)
		}
		c := int64(0)
		if st > 0 && e > b {
			c = (e - b + st - 1) / st
		} else if st < 0 && b > e {
			c = (b - e - st - 1) / -st
		}
		lo[a], step[a], count[a] = int(b), int(st), int(c)
	}
	out := &tensor{isInt: x.isInt, dims: count}
	src, n2 := strides(x.dims), out.size()
	dst := strides(count)
	for k := range n2 {
		off, rem := 0, k
		for a := range r {
			c := rem / dst[a]
			rem %= dst[a]
			off += (lo[a] + c*step[a]) * src[a]
		}
		if x.isInt {
			out.i = append(out.i, x.i[off])
		} else {
			out.f = append(out.f, x.f[off])
		}
	}
	return out, nil
}

// axesOf is a node's axes: its attribute (older opsets) or its second
// input.
func axesOf(n *onnxpb.NodeProto, in []*tensor) []int64 {
	if a := attrInts(n, "axes"); a != nil {
		return a
	}
	if len(in) > 1 && in[1] != nil {
		return in[1].ints()
	}
	return nil
}

func squeeze(n *onnxpb.NodeProto, in []*tensor) (*tensor, error) {
	x := in[0]
	axes := axesOf(n, in)
	out := *x
	if n.GetOpType() == "Unsqueeze" {
		r := len(x.dims) + len(axes)
		mark := make([]bool, r)
		for _, a := range axes {
			if a < 0 {
				a += int64(r)
			}
			if a < 0 || a >= int64(r) {
				return nil, fmt.Errorf("axis %d of a %d-dimensional result", a, r)
			}
			mark[a] = true
		}
		out.dims = nil
		k := 0
		for _, m := range mark {
			if m {
				out.dims = append(out.dims, 1)
			} else {
				out.dims = append(out.dims, x.dims[k])
				k++
			}
		}
		return &out, nil
	}
	out.dims = nil
	for k, d := range x.dims {
		drop := len(axes) == 0 && d == 1
		for _, a := range axes {
			if a == int64(k) || a+int64(len(x.dims)) == int64(k) {
				drop = true
			}
		}
		if !drop {
			out.dims = append(out.dims, d)
		}
	}
	return &out, nil
}

func concat(in []*tensor, axis int) (*tensor, error) {
	r := len(in[0].dims)
	if axis < 0 {
		axis += r
	}
	if axis < 0 || axis >= r {
		return nil, fmt.Errorf("axis %d of %d-dimensional tensors", axis, r)
	}
	out := &tensor{isInt: in[0].isInt, dims: slices.Clone(in[0].dims)}
	out.dims[axis] = 0
	for _, t := range in {
		if t == nil || len(t.dims) != r || t.isInt != out.isInt {
			return nil, errors.New("tensors of different ranks or types")
		}
		for k := range r {
			if k != axis && t.dims[k] != in[0].dims[k] {
				return nil, fmt.Errorf("tensors of shapes %v and %v", in[0].dims, t.dims)
			}
		}
		out.dims[axis] += t.dims[axis]
	}
	if !fits(out.dims) {
		return nil, fmt.Errorf("a result of shape %v", out.dims)
	}
	outer := 1
	for _, d := range out.dims[:axis] {
		outer *= d
	}
	for o := range outer {
		for _, t := range in {
			chunk := t.size() / max(outer, 1)
			if t.isInt {
				out.i = append(out.i, t.i[o*chunk:(o+1)*chunk]...)
			} else {
				out.f = append(out.f, t.f[o*chunk:(o+1)*chunk]...)
			}
		}
	}
	return out, nil
}

// reshapeDims resolves a Reshape's target shape against dims: 0 copies
// the dimension (unless allowzero), −1 takes what is left, batch keeps
// the batch dimension (dims[0]).
func reshapeDims(dims []int, shape []int64, allowZero bool) ([]int, error) {
	total := 1
	for _, d := range dims {
		total *= d
	}
	out := make([]int, len(shape))
	infer, known := -1, 1
	for k, s := range shape {
		switch {
		case s == batch && len(dims) > 0:
			out[k] = dims[0]
		case s == 0 && !allowZero && k < len(dims):
			out[k] = dims[k]
		case s == -1 && infer < 0:
			infer = k
			continue
		case s >= 0:
			out[k] = int(s)
		default:
			return nil, fmt.Errorf("target shape %v", shape)
		}
		known *= out[k]
	}
	if infer >= 0 {
		if known == 0 || total%known != 0 {
			return nil, fmt.Errorf("target shape %v does not divide %d values", shape, total)
		}
		out[infer] = total / known
	} else if known != total {
		return nil, fmt.Errorf("target shape %v holds %d values, not %d", shape, known, total)
	}
	return out, nil
}

// Attributes.

func attr(n *onnxpb.NodeProto, name string) *onnxpb.AttributeProto {
	for _, a := range n.GetAttribute() {
		if a.GetName() == name {
			return a
		}
	}
	return nil
}

func attrInt(n *onnxpb.NodeProto, name string, def int64) int64 {
	if a := attr(n, name); a != nil {
		return a.GetI()
	}
	return def
}

func attrFloat(n *onnxpb.NodeProto, name string, def float32) float32 {
	if a := attr(n, name); a != nil {
		return a.GetF()
	}
	return def
}

func attrInts(n *onnxpb.NodeProto, name string) []int64 {
	if a := attr(n, name); a != nil {
		return a.GetInts()
	}
	return nil
}

func attrString(n *onnxpb.NodeProto, name, def string) string {
	if a := attr(n, name); a != nil {
		return string(a.GetS())
	}
	return def
}
