// Command onnx-agree checks a model file's ONNX export against lathe's
// runtime over a whole test set: the export run in onnxruntime (Node's
// onnxruntime-node, infer/testdata/ort, all graph optimizations), the
// model file in lathe's runtime, and per image the top-1 class and the
// largest logit difference compared (a text model's byte ids fed as int64;
// a language model's every position compared). Given an ONNX file (an
// import's check), lathe's runtime runs its import and onnxruntime the
// file itself.
//
//	go run ./bench/onnx-agree -dataset fashion-mnist runs/x/model.arrow [--int8] [--qdq]
//	go run ./bench/onnx-agree -dataset langid runs/langid/model.arrow
//	go run ./bench/onnx-agree -dataset fashion-mnist onnx/testdata/fashion_resnet8.onnx
package main

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/onnx"
)

func main() {
	dataset := flag.String("dataset", "mnist", "mnist, fashion-mnist, langid or kjv: its test set")
	int8 := flag.Bool("int8", false, "export 4-bit weights as 8-bit (opset 17)")
	qdq := flag.Bool("qdq", false, "export quantized activations as QuantizeLinear/DequantizeLinear pairs (lathe export --qdq)")
	flag.Parse()
	if flag.NArg() != 1 {
		log.Fatal("usage: onnx-agree [-dataset D] [-int8] [-qdq] MODEL.arrow|MODEL.onnx")
	}
	imported := strings.EqualFold(filepath.Ext(flag.Arg(0)), ".onnx")
	f, err := onnx.ReadModel(flag.Arg(0), *dataset)
	if err != nil {
		log.Fatal(err)
	}
	m, err := infer.Load(f, cpu.New(cpu.Options{Threads: 2, Spin: infer.Spin}))
	if err != nil {
		log.Fatal(err)
	}
	_, test, err := data.Load(*dataset, "")
	if err != nil {
		log.Fatal(err)
	}
	n, fe := test.Len(), test.Features()
	x, labels, idx := make([]float32, n*fe), make([]float32, n*test.LabelsPer()), make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	(&data.Batcher{Set: test}).Fill(x, labels, idx, 0)
	want := make([]float32, 0, n*m.Classes)
	for lo := 0; lo < n; lo += 500 { // the runtime reuses its result between calls
		hi := min(lo+500, n)
		y, err := m.Forward(x[lo*fe:hi*fe], hi-lo)
		if err != nil {
			log.Fatal(err)
		}
		want = append(want, y...)
	}
	dir, err := os.MkdirTemp("", "onnx-agree")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	model, in, out := filepath.Join(dir, "model.onnx"), filepath.Join(dir, "x.f32"), filepath.Join(dir, "y.f32")
	what := "imported; onnxruntime on the original file"
	if imported {
		if model, err = filepath.Abs(flag.Arg(0)); err != nil {
			log.Fatal(err)
		}
	} else {
		var buf bytes.Buffer
		info, err := infer.ExportONNX(f, &buf, infer.ONNXOptions{Int8: *int8, QDQ: *qdq})
		if err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(model, buf.Bytes(), 0o644); err != nil {
			log.Fatal(err)
		}
		what = fmt.Sprintf("exported: opset %d, %d bytes", info.Opset, buf.Len())
	}
	raw := make([]byte, 0, 4*len(x))
	for _, v := range x {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v))
	}
	if err := os.WriteFile(in, raw, 0o644); err != nil {
		log.Fatal(err)
	}
	args := []string{"run.mjs", model, in, out, strconv.Itoa(n), strconv.Itoa(m.Channels), strconv.Itoa(m.Rows), strconv.Itoa(m.Cols)}
	if len(m.Net.Layers) > 0 && m.Net.Layers[0].Kind == graph.Embedding {
		args = append(args, "ids")
	}
	cmd := exec.Command("node", args...)
	cmd.Dir, cmd.Stderr = "infer/testdata/ort", os.Stderr
	if _, err := cmd.Output(); err != nil {
		log.Fatalf("onnxruntime (run from the repository root, after make deps): %v", err)
	}
	b, err := os.ReadFile(out)
	if err != nil || len(b) != 4*len(want) {
		log.Fatalf("onnxruntime's logits: %d bytes, %v", len(b), err)
	}
	argmax := func(v []float32) int {
		best := 0
		for i, x := range v {
			if x > v[best] {
				best = i
			}
		}
		return best
	}
	same, correct, worst, c := 0, 0, 0.0, m.Classes
	for s := range len(labels) { // a sample's logits, or a position's
		got := make([]float32, c)
		for j := range got {
			got[j] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*(s*c+j):]))
			worst = max(worst, math.Abs(float64(got[j]-want[s*c+j])))
		}
		if argmax(got) == argmax(want[s*c:(s+1)*c]) {
			same++
		}
		if argmax(got) == int(labels[s]) {
			correct++
		}
	}
	fmt.Printf("%s (%s): top-1 identical on %d / %d; largest |Δlogit| %.3g; onnxruntime accuracy %.2f %%\n",
		flag.Arg(0), what, same, len(labels), worst, 100*float64(correct)/float64(len(labels)))
}
