// Package ort runs an ONNX file in onnxruntime for the tests that check
// lathe against it: Node.js's npm onnxruntime-node (infer/testdata/ort,
// which `make deps` installs), fed float32 inputs and read back as the
// output "logits".
package ort

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
)

// Dir is the npm project holding onnxruntime-node and run.mjs.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "infer", "testdata", "ort")
}

// Run runs the ONNX file at path over x [batch, c, h, w] (its input
// "input") and returns its output "logits". With extra "ids" the values
// are bytes as v/255, fed as int64 ids [batch, w] (a text model's). A
// missing Node.js or onnxruntime-node fails the test with how to install
// them.
func Run(t testing.TB, path string, x []float32, batch, c, h, w int, extra ...string) []float32 {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("the ONNX test needs Node.js: run `make deps` (it installs nodejs and the npm packages)")
	}
	dir := Dir()
	if _, err := os.Stat(filepath.Join(dir, "node_modules/onnxruntime-node")); err != nil {
		t.Fatal("the ONNX test needs npm onnxruntime-node: run `make deps` (npm ci --ignore-scripts --prefix infer/testdata/ort)")
	}
	tmp := t.TempDir()
	in, out := filepath.Join(tmp, "x.f32"), filepath.Join(tmp, "y.f32")
	raw := make([]byte, 0, 4*len(x))
	for _, v := range x {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v))
	}
	if err := os.WriteFile(in, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(path)
	cmd := exec.Command(node, append([]string{"run.mjs", abs, in, out, strconv.Itoa(batch), strconv.Itoa(c), strconv.Itoa(h), strconv.Itoa(w)}, extra...)...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if _, err := cmd.Output(); err != nil {
		t.Fatalf("onnxruntime could not run %s: %v\n%s", path, err, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	y := make([]float32, len(b)/4)
	for i := range y {
		y[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return y
}
