// Package graphop holds the plumbing lathe's gorgonia ops share: a base
// that gives every op instance a unique hash, op-owned output buffers
// reused across steps, and type and value helpers. The ops themselves live
// with what they compute (model, compress, distill).
package graphop

import (
	"fmt"
	"hash"
	"hash/fnv"
	"sync/atomic"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compute"
)

var serial atomic.Int64

// Base carries what every project op shares. Each op instance has a unique
// hash: ops own their output buffers, and gorgonia merges nodes whose op
// and children hash alike.
type Base struct {
	id   int64
	Name string
	Eng  compute.Engine
}

// NewBase returns a Base with a fresh identity.
func NewBase(name string, eng compute.Engine) Base {
	return Base{id: serial.Add(1), Name: name, Eng: eng}
}

func (o *Base) WriteHash(h hash.Hash) { fmt.Fprintf(h, "lathe.%s#%d", o.Name, o.id) }
func (o *Base) Hashcode() uint32 {
	h := fnv.New32a()
	o.WriteHash(h)
	return h.Sum32()
}
func (o *Base) String() string       { return o.Name }
func (o *Base) ReturnsPtr() bool     { return true }
func (o *Base) CallsExtern() bool    { return false }
func (o *Base) OverwritesInput() int { return -1 }

// ShapeErr is an error naming the op.
func (o *Base) ShapeErr(f string, a ...any) error {
	return fmt.Errorf("op %s: %s", o.Name, fmt.Sprintf(f, a...))
}

// F32T is the float32 tensor type of the given rank (0: scalar).
func F32T(dims int) hm.Type {
	if dims == 0 {
		return tensor.Float32
	}
	return G.TensorType{Dims: dims, Of: tensor.Float32}
}

// FnType is the type of an op taking ins and returning out.
func FnType(out hm.Type, ins ...hm.Type) hm.Type {
	return hm.NewFnType(append(ins, out)...)
}

// Data returns a value's float32 backing slice without copying.
func Data(v G.Value) []float32 {
	switch t := v.(type) {
	case *tensor.Dense:
		return t.Float32s()
	case *G.F32:
		return []float32{float32(*t)}
	}
	panic(fmt.Sprintf("graphop: unexpected value type %T", v))
}

// Scalar reads a float32 scalar value (a gradient seed).
func Scalar(v G.Value) float32 {
	switch t := v.(type) {
	case *G.F32:
		return float32(*t)
	case *tensor.Dense:
		return t.Float32s()[0]
	}
	panic(fmt.Sprintf("graphop: unexpected scalar type %T", v))
}

// Buffer is an op-owned output, allocated on first use and reused while
// the shape stays the same.
type Buffer struct{ T *tensor.Dense }

// Get returns the buffer with the given shape.
func (b *Buffer) Get(shape ...int) *tensor.Dense {
	if b.T == nil || !b.T.Shape().Eq(tensor.Shape(shape)) {
		b.T = tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(shape...))
	}
	return b.T
}

// Slots is an op-owned output with a buffer per slot, for an output its
// caller keeps across runs: the trainer runs a step's micro-shards one
// after the other and sums their weight gradients in one pass at the end,
// each run's gradient in a slot of its own. Slot 0 until Use says
// otherwise.
type Slots struct {
	bufs []Buffer
	at   int
}

// Use makes slot k the buffer Get returns.
func (s *Slots) Use(k int) { s.at = k }

// At is the slot Get returns.
func (s *Slots) At() int { return s.at }

// Get returns the current slot's buffer with the given shape.
func (s *Slots) Get(shape ...int) *tensor.Dense {
	for len(s.bufs) <= s.at {
		s.bufs = append(s.bufs, Buffer{})
	}
	return s.bufs[s.at].Get(shape...)
}

// Slotted is an op whose output is Slots: UseSlot(k) makes the next runs
// write it to slot k, leaving what the other slots hold.
type Slotted interface {
	UseSlot(k int)
}

// Deferrable is a Slotted op whose output is a weight gradient dzᵀ·x
// (dz [n, out], x [n, in]) that its user may sum in a form of its own:
// after Defer(true), a run keeps copies of its operands in its slot
// instead of computing the product (its output then holds nothing
// meaningful), and Operands(k) returns slot k's.
type Deferrable interface {
	Slotted
	Defer(on bool)
	Operands(k int) (dz, x []float32, n int)
}

// Kept holds a Deferrable op's operands, slot by slot.
type Kept struct {
	dz, x [][]float32
	n     []int
}

// Keep copies a run's operands into slot k.
func (p *Kept) Keep(k int, dz, x []float32, n int) {
	for len(p.n) <= k {
		p.dz, p.x, p.n = append(p.dz, nil), append(p.x, nil), append(p.n, 0)
	}
	p.dz[k], p.x[k], p.n[k] = append(p.dz[k][:0], dz...), append(p.x[k][:0], x...), n
}

// Operands returns slot k's operands (nil and 0 before a run kept any).
func (p *Kept) Operands(k int) (dz, x []float32, n int) {
	if k >= len(p.n) {
		return nil, nil, 0
	}
	return p.dz[k], p.x[k], p.n[k]
}

// Scalar returns the buffer as a 0-d tensor.
func (b *Buffer) Scalar() *tensor.Dense {
	if b.T == nil {
		b.T = tensor.New(tensor.Of(tensor.Float32), tensor.FromScalar(float32(0)))
	}
	return b.T
}
