package model_test

import (
	"fmt"

	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/model"
)

// A network lathe has no preset for, described in Go, becomes a model
// whose parameters are initialised from the seed.
func ExampleFromNetwork() {
	c := graph.NewChain(graph.Shape{H: 28, W: 28, C: 1}, 10)
	c.Add(graph.Layer{Name: "conv1", Kind: graph.Conv, Out: 6, Kernel: 5, Act: graph.ReLU})
	c.Add(graph.Layer{Name: "pool1", Kind: graph.MaxPool})
	c.Add(graph.Layer{Name: "fc1", Kind: graph.Linear, Out: 32, Act: graph.ReLU, Dropout: 0.2})
	c.Add(graph.Layer{Name: "fc2", Kind: graph.Linear, Out: 10})
	m, err := model.FromNetwork(c.Net, "kaiming", 7)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, w := range m.Weights() {
		fmt.Println(w.Name, w.Shape, w.Groups)
	}
	fmt.Println(m.NumParams(), "parameters")
	// Output:
	// conv1 [6 5 5 1] [filters channels]
	// fc1 [32 864] [rows columns]
	// fc2 [10 32] [rows columns]
	// 28166 parameters
}
