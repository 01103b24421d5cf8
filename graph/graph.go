package graph

import (
	"errors"
	"fmt"
	"slices"
)

// Kind is how a layer computes.
type Kind string

// The layer kinds.
const (
	// Linear is y = act(x·Wᵀ + b), W [Out, in].
	Linear Kind = "linear"
	// Conv is a valid (unpadded, stride 1) convolution of In with Out
	// filters of Kernel×Kernel, W [Out, Kernel, Kernel, In.C] (NHWC), then
	// act.
	Conv Kind = "conv"
	// MaxPool is a 2×2 max pooling with stride 2.
	MaxPool Kind = "maxpool"
)

// Activation follows a layer.
type Activation string

// The activations.
const (
	Identity Activation = "identity"
	ReLU     Activation = "relu"
)

// Group is a structure of a weight that structured pruning removes whole.
type Group string

// The groups.
const (
	Rows     Group = "rows"     // a linear layer's neurons (output rows)
	Columns  Group = "columns"  // a linear layer's inputs
	Filters  Group = "filters"  // a convolution's output filters
	Channels Group = "channels" // a convolution's input channels
)

// Shape is an activation's shape per sample, NHWC: a flat vector is
// {1, 1, n}.
type Shape struct {
	H int `json:"h"`
	W int `json:"w"`
	C int `json:"c"`
}

// Size is the number of values.
func (s Shape) Size() int { return s.H * s.W * s.C }

// Layer is one node of a network.
type Layer struct {
	Name string `json:"name"`
	Kind Kind   `json:"kind"`
	// In is the shape the layer receives (a linear layer's is {1, 1,
	// features}).
	In Shape `json:"in"`
	// Out is a linear layer's outputs or a convolution's filters.
	Out int `json:"out,omitempty"`
	// Kernel is a convolution's kernel size.
	Kernel int        `json:"kernel,omitempty"`
	Act    Activation `json:"act"`
	// Dropout applies to the layer's output in training.
	Dropout float64 `json:"dropout,omitempty"`
}

// Output is the shape the layer produces.
func (l Layer) Output() Shape {
	switch l.Kind {
	case Conv:
		return Shape{H: l.In.H - l.Kernel + 1, W: l.In.W - l.Kernel + 1, C: l.Out}
	case MaxPool:
		return Shape{H: l.In.H / 2, W: l.In.W / 2, C: l.In.C}
	}
	return Shape{H: 1, W: 1, C: l.Out}
}

// Param is one parameter a layer owns.
type Param struct {
	Name  string // the weight is its layer's name, the bias Name+".bias"
	Layer string
	Shape []int
	Bias  bool
	// Groups are the structures pruning may remove (a weight's).
	Groups []Group
	// Fan is the number of inputs each output sees (initialisation).
	Fan int
}

// Size is the parameter's number of elements (int64: a description may be
// far larger than anything that could be allocated).
func (p Param) Size() int64 {
	n := int64(1)
	for _, d := range p.Shape {
		n *= int64(d)
	}
	return n
}

// Params lists the parameters of layer l: its weight then its bias (none
// for a pooling layer).
func (l Layer) Params() []Param {
	switch l.Kind {
	case Linear:
		in := l.In.Size()
		return []Param{
			{Name: l.Name, Layer: l.Name, Shape: []int{l.Out, in}, Groups: []Group{Rows, Columns}, Fan: in},
			{Name: l.Name + ".bias", Layer: l.Name, Shape: []int{l.Out}, Bias: true, Fan: in},
		}
	case Conv:
		fan := l.Kernel * l.Kernel * l.In.C
		return []Param{
			{Name: l.Name, Layer: l.Name, Shape: []int{l.Out, l.Kernel, l.Kernel, l.In.C}, Groups: []Group{Filters, Channels}, Fan: fan},
			{Name: l.Name + ".bias", Layer: l.Name, Shape: []int{l.Out}, Bias: true, Fan: fan},
		}
	}
	return nil
}

// Network is a network's description.
type Network struct {
	Input   Shape   `json:"input"`
	Classes int     `json:"classes"`
	Layers  []Layer `json:"layers"`
}

// Params lists every parameter, layer by layer.
func (n Network) Params() []Param {
	var out []Param
	for _, l := range n.Layers {
		out = append(out, l.Params()...)
	}
	return out
}

// NumParams counts the parameters' elements (int64: a description may be
// far larger than anything that could be allocated).
func (n Network) NumParams() int64 {
	var total int64
	for _, p := range n.Params() {
		total += p.Size()
	}
	return total
}

// Layer returns the layer named name, or nil.
func (n Network) Layer(name string) *Layer {
	for i := range n.Layers {
		if n.Layers[i].Name == name {
			return &n.Layers[i]
		}
	}
	return nil
}

// Clone returns a copy that shares nothing with n.
func (n Network) Clone() Network {
	n.Layers = slices.Clone(n.Layers)
	return n
}

// Validate checks that each layer receives what the one before produces
// and that the last produces the classes.
func (n Network) Validate() error {
	if len(n.Layers) == 0 {
		return errors.New("graph: a network without layers")
	}
	in := n.Input
	for _, l := range n.Layers {
		if l.In != in && !(l.Kind == Linear && l.In.Size() == in.Size()) {
			return fmt.Errorf("graph: layer %s receives %v, but %v comes in", l.Name, l.In, in)
		}
		switch {
		case l.Kind != Linear && l.Kind != Conv && l.Kind != MaxPool:
			return fmt.Errorf("graph: layer %s is a %q layer, which lathe does not know", l.Name, l.Kind)
		case l.Kind != MaxPool && l.Out < 1:
			return fmt.Errorf("graph: layer %s has %d outputs", l.Name, l.Out)
		case l.Kind == Conv && l.Kernel < 1:
			return fmt.Errorf("graph: layer %s has a %d×%d kernel", l.Name, l.Kernel, l.Kernel)
		}
		out := l.Output()
		if out.H <= 0 || out.W <= 0 || out.C <= 0 {
			return fmt.Errorf("graph: layer %s produces %v from %v", l.Name, out, l.In)
		}
		in = out
	}
	if in.Size() != n.Classes {
		return fmt.Errorf("graph: the last layer produces %d values for %d classes", in.Size(), n.Classes)
	}
	return nil
}
