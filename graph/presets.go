package graph

import "fmt"

// Chain builds a network from layers given in order: each receives what
// the one before produces (the first, the input), and a linear layer
// after a spatial one sees it flattened.
type Chain struct {
	Net Network
	cur Shape
}

// NewChain starts a network on input with classes outputs.
func NewChain(input Shape, classes int) *Chain {
	return &Chain{Net: Network{Input: input, Classes: classes}, cur: input}
}

// Add appends a layer, setting its input shape.
func (c *Chain) Add(l Layer) *Chain {
	l.In = c.cur
	if l.Kind == Linear {
		l.In = Shape{H: 1, W: 1, C: c.cur.Size()}
	}
	if l.Act == "" {
		l.Act = Identity
	}
	c.Net.Layers = append(c.Net.Layers, l)
	c.cur = l.Output()
	return c
}

// MLP is a stack of linear layers fc1, fc2, …: ReLU and dropout after each
// hidden one, the last producing the classes.
func MLP(input Shape, hidden []int, classes int, dropout float64) Network {
	c := NewChain(input, classes)
	for i, h := range hidden {
		c.Add(Layer{Name: fmt.Sprintf("fc%d", i+1), Kind: Linear, Out: h, Act: ReLU, Dropout: dropout})
	}
	c.Add(Layer{Name: fmt.Sprintf("fc%d", len(hidden)+1), Kind: Linear, Out: classes})
	return c.Net
}

// LeNet5 is Caffe's LeNet-5: conv1 (5×5, conv[0] filters, ReLU), 2×2 max
// pooling, conv2 (5×5, conv[1]), pooling, fc1 (hidden, ReLU, dropout), fc2
// to the classes.
func LeNet5(input Shape, conv [2]int, hidden, classes int, dropout float64) Network {
	c := NewChain(input, classes)
	for i, f := range conv {
		name := fmt.Sprintf("conv%d", i+1)
		c.Add(Layer{Name: name, Kind: Conv, Out: f, Kernel: 5, Act: ReLU})
		c.Add(Layer{Name: name + ".pool", Kind: MaxPool})
	}
	c.Add(Layer{Name: "fc1", Kind: Linear, Out: hidden, Act: ReLU, Dropout: dropout})
	c.Add(Layer{Name: "fc2", Kind: Linear, Out: classes})
	return c.Net
}

// Factorize returns n with the linear layer name replaced by two: name.v
// (its inputs → rank, no activation) then name.u (rank → its outputs, its
// activation and dropout).
func Factorize(n Network, name string, rank int) (Network, error) {
	for i, l := range n.Layers {
		if l.Name != name {
			continue
		}
		if l.Kind != Linear {
			return n, fmt.Errorf("graph: %s is a %s layer; only linear layers factorize", name, l.Kind)
		}
		v := Layer{Name: name + ".v", Kind: Linear, In: l.In, Out: rank, Act: Identity}
		u := l
		u.Name, u.In = name+".u", Shape{H: 1, W: 1, C: rank}
		out := n.Clone()
		out.Layers = append(append(append([]Layer{}, n.Layers[:i]...), v, u), n.Layers[i+1:]...)
		return out, nil
	}
	return n, fmt.Errorf("graph: no layer %s", name)
}
