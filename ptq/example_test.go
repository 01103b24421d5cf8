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

// A calibration pass in two shares, as two workers would compute them:
// batches [0, 1) and [1, 2) of 200 samples (128 and 72; c2 reads 7×7
// patches of each), which the
// compressing process adds up in batch order.
func ExampleTraceBatches() {
	f, err := onnx.ReadModel("../onnx/testdata/mnist_cnn.op17.onnx", "mnist")
	if err != nil {
		log.Fatal(err)
	}
	train, _, err := data.Load("mnist", "")
	if err != nil {
		log.Fatal(err)
	}
	x := ptq.Calibration(train, 200, 1)
	want := ptq.Want{Layer: "c2", Observed: []string{"c1"}}
	eng := cpu.New(cpu.Options{Threads: 1})
	first, err := ptq.TraceBatches(f, x, eng, 0, 1, want)
	if err != nil {
		log.Fatal(err)
	}
	second, err := ptq.TraceBatches(f, x, eng, 1, 2, want)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ptq.Batches(200), "batches")
	for _, b := range append(first, second...) {
		fmt.Println(b.Rows, "rows of c2's inputs,", len(b.H), "Hessian; c1's outputs sampled:", len(b.Samples["c1"]) > 0)
	}
	// Output:
	// 2 batches
	// 6272 rows of c2's inputs, 1 Hessian; c1's outputs sampled: true
	// 3528 rows of c2's inputs, 1 Hessian; c1's outputs sampled: true
}
