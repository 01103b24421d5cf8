package graph

import (
	"fmt"
)

// TableFormat is the format of the layer table model files carry: 2, the
// Network itself; 1 (files written before it), a list of the forward
// pass's layers in the runtime's own terms. Both are read.
const TableFormat = 2

// Table is the layer table of a model file's state document: the one
// thing a model file says about its network. NewTable writes it and
// Resolve reads it; a state document embeds it.
type Table struct {
	Format  int      `json:"format,omitempty"` // 0: format 1
	Network *Network `json:"network,omitempty"`
	// Layers is format 1's list.
	Layers []LegacyLayer `json:"layers,omitempty"`
}

// LegacyLayer is a layer of format 1's list.
type LegacyLayer struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`               // "linear", "conv", "maxpool"
	Act     string `json:"act"`                // "relu" or "identity"
	In      int    `json:"in"`                 // input features (linear)
	Out     int    `json:"out"`                // outputs (linear) or filters (conv)
	K       int    `json:"k,omitempty"`        // conv kernel
	InShape []int  `json:"in_shape,omitempty"` // conv, maxpool: [H, W, C] (NHWC)
}

// NewTable is the table of a network as a model file stores it: for
// inference, so without dropout.
func NewTable(n Network) Table {
	n = n.Clone()
	for i := range n.Layers {
		n.Layers[i].Dropout = 0
	}
	return Table{Format: TableFormat, Network: &n}
}

// Resolve returns the network the table describes, checked: format 2's
// as stored, format 1's list rebuilt for the file's input and classes. A
// format newer than TableFormat is refused, naming it.
func (t Table) Resolve(input Shape, classes int) (Network, error) {
	switch {
	case t.Format > TableFormat:
		return Network{}, fmt.Errorf("graph: the model file's layer table is format %d; this lathe reads formats 1 to %d (a newer lathe wrote it)", t.Format, TableFormat)
	case t.Format == TableFormat && t.Network == nil:
		return Network{}, fmt.Errorf("graph: the model file's layer table (format %d) holds no network", t.Format)
	case t.Format == TableFormat:
		if err := t.Network.Validate(); err != nil {
			return Network{}, err
		}
		return t.Network.Clone(), nil
	case len(t.Layers) == 0:
		return Network{}, fmt.Errorf("graph: the model file lists no layers (written by an older lathe; export it again)")
	}
	c := NewChain(input, classes)
	for _, l := range t.Layers {
		act := Activation(l.Act)
		if act == "" {
			act = Identity
		}
		if act != ReLU && act != Identity {
			return Network{}, fmt.Errorf("graph: layer %s: activation %q", l.Name, l.Act)
		}
		switch Kind(l.Kind) {
		case Linear:
			if l.In != c.cur.Size() {
				return Network{}, fmt.Errorf("graph: layer %s takes %d inputs, %d come in", l.Name, l.In, c.cur.Size())
			}
			c.Add(Layer{Name: l.Name, Kind: Linear, Out: l.Out, Act: act})
		case Conv, MaxPool:
			if len(l.InShape) != 3 || (Shape{H: l.InShape[0], W: l.InShape[1], C: l.InShape[2]}) != c.cur {
				return Network{}, fmt.Errorf("graph: layer %s: input shape %v for %d inputs", l.Name, l.InShape, c.cur.Size())
			}
			c.Add(Layer{Name: l.Name, Kind: Kind(l.Kind), Out: l.Out, Kernel: l.K, Act: act})
		default:
			return Network{}, fmt.Errorf("graph: layer %s is a %s layer, which the runtime does not run", l.Name, l.Kind)
		}
	}
	if err := c.Net.Validate(); err != nil {
		return Network{}, err
	}
	return c.Net, nil
}
