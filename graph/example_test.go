package graph_test

import (
	"fmt"

	"github.com/lathe-ml/lathe/graph"
)

// A network is described layer by layer; each parameter's name, shape and
// prunable groups follow from it.
func ExampleNewChain() {
	c := graph.NewChain(graph.Shape{H: 28, W: 28, C: 1}, 10)
	c.Add(graph.Layer{Name: "conv1", Kind: graph.Conv, Out: 8, Kernel: 5, Act: graph.ReLU})
	c.Add(graph.Layer{Name: "pool1", Kind: graph.MaxPool})
	c.Add(graph.Layer{Name: "fc1", Kind: graph.Linear, Out: 10})
	net := c.Net
	if err := net.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	for _, p := range net.Params() {
		fmt.Println(p.Name, p.Shape, p.Groups)
	}
	fmt.Println(net.NumParams(), "parameters")
	// Output:
	// conv1 [8 5 5 1] [filters channels]
	// conv1.bias [8] []
	// fc1 [10 1152] [rows columns]
	// fc1.bias [10] []
	// 11738 parameters
}

// The shipped architectures are presets; factorization returns a new
// description.
func ExampleFactorize() {
	net := graph.MLP(graph.Shape{H: 28, W: 28, C: 1}, []int{300, 100}, 10, 0)
	low, err := graph.Factorize(net, "fc1", 32)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(net.NumParams(), "→", low.NumParams())
	for _, l := range low.Layers {
		fmt.Println(l.Name, l.In.Size(), "→", l.Output().Size(), l.Act)
	}
	// Output:
	// 266610 → 66130
	// fc1.v 784 → 32 identity
	// fc1.u 32 → 300 relu
	// fc2 300 → 100 relu
	// fc3 100 → 10 identity
}
