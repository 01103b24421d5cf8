package ptq_test

import (
	"fmt"
	"log"

	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/onnx"
	"github.com/lathe-ml/lathe/ptq"
)

// Four-bit GPTQ weights for an imported model, calibrated on 64 training
// images: batch norms folded first, then each layer in turn.
func ExampleCompress() {
	f, err := onnx.ReadModel("../onnx/testdata/mnist_cnn.op17.onnx", "mnist")
	if err != nil {
		log.Fatal(err)
	}
	train, _, err := data.Load("mnist", "")
	if err != nil {
		log.Fatal(err)
	}
	x := ptq.Calibration(train, 64, 1)
	out, rep, err := ptq.Compress(f, x, cpu.New(cpu.Options{Threads: 1}), ptq.Options{Bits: 4, GPTQ: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(rep.Folded, "batch norms folded")
	for _, l := range rep.Layers {
		fmt.Println(l.Layer, l.Method, l.Error <= l.Baseline)
	}
	fmt.Println(out.Tensor("c2").Quant.Bits, "bits")
	// Output:
	// 2 batch norms folded
	// c1 gptq true
	// c2 gptq true
	// fc gptq true
	// 4 bits
}
