package infer_test

import (
	"fmt"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/infer"
)

// A model file (here a small one lathe's tests keep) runs in the inference
// runtime, each layer on the kernel measured fastest at load.
func ExampleLoad() {
	f, err := checkpoint.Read("../checkpoint/testdata/model.arrow")
	if err != nil {
		fmt.Println(err)
		return
	}
	m, err := infer.Load(f, cpu.New(cpu.Options{Threads: 1}))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, l := range m.Layers {
		fmt.Println(l.Name, l.Kind, l.In, "→", l.Out)
	}
	_, test, err := data.Load("mnist", "")
	if err != nil {
		fmt.Println(err)
		return
	}
	classes, err := infer.Predict(m, test.Slice("test", 0, 10), 10)
	fmt.Println(len(classes), "predictions", err)
	// Output:
	// fc1 linear 784 → 16
	// fc2 linear 16 → 10
	// 10 predictions <nil>
}
