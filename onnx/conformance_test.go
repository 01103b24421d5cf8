package onnx

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/internal/onnxpb"
)

// nodeTests is where Debian's libonnx-testdata keeps ONNX's own
// per-operator test cases (a model, its inputs, its expected outputs).
const nodeTests = "/usr/share/libonnx-testdata/data/node"

// The test cases of the operators lathe imports.
var conformanceOps = []string{"test_conv_", "test_gemm_", "test_matmul_", "test_relu", "test_clip", "test_maxpool_", "test_averagepool_",
	"test_globalaveragepool", "test_batchnorm_", "test_flatten_", "test_reshape_", "test_layer_normalization_", "test_gelu", "test_softmax_",
	"test_add", "test_sum_", "test_reduce_mean_", "test_pad", "test_transpose_", "test_gather_", "test_identity", "test_dropout_", "test_erf", "test_sigmoid", "test_slice"}

func readProto(t *testing.T, path string, m proto.Message) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestONNXOperatorTests runs the importer on ONNX's own test cases of the
// operators it supports (libonnx-testdata): the case's first input is the
// network's input, the others become constants (weights). Each case is
// either imported and computed by lathe's runtime as ONNX expects (within
// 1e-4) or refused with an error — never imported and computed otherwise.
func TestONNXOperatorTests(t *testing.T) {
	dirs, err := os.ReadDir(nodeTests)
	if err != nil {
		t.Fatalf("ONNX's operator tests: %v (make deps installs Debian's libonnx-testdata)", err)
	}
	agreed, refused := 0, 0
	for _, d := range dirs {
		name := d.Name()
		if !strings.HasPrefix(name, "test_") || !hasPrefix(name, conformanceOps) || strings.Contains(name, "_expanded") {
			continue
		}
		ok, why := conformanceCase(t, filepath.Join(nodeTests, name))
		if ok {
			agreed++
			t.Logf("%-52s agrees", name)
		} else {
			refused++
			t.Logf("%-52s refused: %s", name, why)
		}
	}
	t.Logf("%d cases computed as ONNX expects, %d refused", agreed, refused)
	if agreed < 20 {
		t.Errorf("only %d of ONNX's operator tests import and agree", agreed)
	}
}

func hasPrefix(s string, ps []string) bool {
	for _, p := range ps {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// conformanceCase imports one case and compares; it fails the test when
// an imported case computes something else than ONNX expects.
func conformanceCase(t *testing.T, dir string) (bool, string) {
	var mp onnxpb.ModelProto
	readProto(t, filepath.Join(dir, "model.onnx"), &mp)
	g := mp.GetGraph()
	set := filepath.Join(dir, "test_data_set_0")
	var x *onnxpb.TensorProto
	for k, in := range g.GetInput() {
		var tp onnxpb.TensorProto
		readProto(t, filepath.Join(set, "input_"+itoa(k)+".pb"), &tp)
		if k == 0 {
			x = &tp
			continue
		}
		tp.Name = proto.String(in.GetName())
		g.Initializer = append(g.Initializer, &tp)
	}
	if len(g.GetOutput()) != 1 || x == nil {
		return false, "not one input and one output"
	}
	var want onnxpb.TensorProto
	readProto(t, filepath.Join(set, "output_0.pb"), &want)
	b, err := proto.Marshal(&mp)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Import(b, Options{imageOut: true})
	if err != nil {
		var ne *NodeError
		if !errors.As(err, &ne) && !strings.HasPrefix(err.Error(), "onnx: ") {
			t.Errorf("%s: an error without the importer's prefix: %v", dir, err)
		}
		return false, err.Error()
	}
	in, err := readTensor(x)
	if err != nil {
		return false, err.Error()
	}
	rt, err := infer.Load(m.File, cpu.New(cpu.Options{Threads: 1}))
	if err != nil {
		t.Errorf("%s: imported, but the runtime cannot load it: %v", dir, err)
		return false, err.Error()
	}
	n := in.dims[0]
	xs := in.floats()
	if len(in.dims) == 4 {
		xs = nhwc(xs, n, in.dims[1], in.dims[2], in.dims[3])
	}
	got, err := rt.Forward(xs, n)
	if err != nil {
		t.Errorf("%s: imported, but the runtime cannot run it: %v", dir, err)
		return false, err.Error()
	}
	exp, err := readTensor(&want)
	if err != nil {
		t.Fatal(err)
	}
	wf := exp.floats()
	if len(exp.dims) == 4 { // lathe's output is NHWC
		wf = nhwc(wf, exp.dims[0], exp.dims[1], exp.dims[2], exp.dims[3])
	}
	if len(got) != len(wf) {
		t.Errorf("%s: imported, but gives %d values, ONNX expects %d", dir, len(got), len(wf))
		return false, "size"
	}
	worst := 0.0
	for i := range got {
		worst = max(worst, math.Abs(float64(got[i]-wf[i])))
	}
	if worst > 1e-4 {
		t.Errorf("%s: imported, but differs from ONNX's expected output by %g", dir, worst)
		return false, "differs"
	}
	return true, ""
}

func itoa(k int) string { return string(rune('0' + k)) }

// TestConstantFoldingOperatorTests computes ONNX's own test cases of the
// operators folded at import (Slice, the shape ops) with every input a
// constant: the result is ONNX's expected output exactly.
func TestConstantFoldingOperatorTests(t *testing.T) {
	dirs, err := os.ReadDir(nodeTests)
	if err != nil {
		t.Fatalf("ONNX's operator tests: %v (make deps installs Debian's libonnx-testdata)", err)
	}
	done := 0
	for _, d := range dirs {
		name := d.Name()
		if !hasPrefix(name, []string{"test_slice", "test_concat_", "test_unsqueeze", "test_squeeze", "test_transpose_"}) || strings.Contains(name, "_expanded") {
			continue
		}
		var mp onnxpb.ModelProto
		readProto(t, filepath.Join(nodeTests, name, "model.onnx"), &mp)
		nodes := mp.GetGraph().GetNode()
		if len(nodes) != 1 {
			continue
		}
		set := filepath.Join(nodeTests, name, "test_data_set_0")
		var in []*tensor
		for k := range mp.GetGraph().GetInput() {
			var tp onnxpb.TensorProto
			readProto(t, filepath.Join(set, "input_"+itoa(k)+".pb"), &tp)
			c, err := readTensor(&tp)
			if err != nil {
				t.Fatalf("%s: input %d: %v", name, k, err)
			}
			in = append(in, c)
		}
		var wp onnxpb.TensorProto
		readProto(t, filepath.Join(set, "output_0.pb"), &wp)
		want, err := readTensor(&wp)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fold(nodes[0], in)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !slices.Equal(got.dims, want.dims) || !slices.Equal(got.floats(), want.floats()) {
			t.Errorf("%s: %v %v, ONNX expects %v %v", name, got.dims, got.floats(), want.dims, want.floats())
		}
		done++
	}
	t.Logf("%d cases folded as ONNX expects", done)
	if done < 10 {
		t.Errorf("only %d of ONNX's cases found", done)
	}
}
