package onnx_test

import (
	"fmt"
	"log"

	"github.com/lathe-ml/lathe/onnx"
)

// A PyTorch export becomes lathe's layers: the batch norms stay (a
// fine-tune trains them; the runtime folds them), the ReLUs join the
// layers before them, ReduceMean over the image is a global pooling.
func ExampleReadFile() {
	m, err := onnx.ReadFile("testdata/mnist_cnn.op17.onnx", onnx.Options{Dataset: "mnist"})
	if err != nil {
		log.Fatal(err)
	}
	for _, l := range m.Net.Layers {
		if l.Act != "" {
			fmt.Println(l.Name, l.Kind, l.Act)
		} else {
			fmt.Println(l.Name, l.Kind)
		}
	}
	fmt.Println(m.Net.NumParams(), "parameters,", m.Net.Classes, "classes")
	// Output:
	// c1 conv
	// b1 batchnorm relu
	// c2 conv
	// b2 batchnorm relu
	// pool1 global_avgpool
	// fc linear
	// 438 parameters, 10 classes
}
