package checkpoint

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

type jsOutput struct {
	Metadata map[string]string `json:"metadata"`
	State    string            `json:"state"`
	Rows     []struct {
		Name     string `json:"name"`
		Role     string `json:"role"`
		Shape    []int  `json:"shape"`
		Encoding string `json:"encoding"`
	} `json:"rows"`
	Values string `json:"values"`
}

// jsRead opens a file with the JavaScript Arrow implementation (npm
// apache-arrow under Node.js; make deps installs both).
func jsRead(t *testing.T, path, tensor string) jsOutput {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("the independent-reader test needs Node.js: run `make deps` (it installs nodejs and the npm packages)")
	}
	if _, err := os.Stat("testdata/jsreader/node_modules/apache-arrow"); err != nil {
		t.Fatal("the independent-reader test needs npm apache-arrow: run `make deps` (npm ci --prefix checkpoint/testdata/jsreader)")
	}
	abs, _ := filepath.Abs(path)
	cmd := exec.Command(node, "read.mjs", abs, tensor)
	cmd.Dir = "testdata/jsreader"
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("apache-arrow (JavaScript) could not read %s: %v\n%s", path, err, stderr)
	}
	var o jsOutput
	if err := json.Unmarshal(out, &o); err != nil {
		t.Fatal(err)
	}
	return o
}

// TestIndependentReader reads real checkpoints and a file with every
// encoding through JavaScript's Arrow and checks names, roles, shapes and
// encodings, and one decoded tensor bit for bit, against this package.
func TestIndependentReader(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	wq, q := quantized(sparseWeight(r, 30, 40, 0.2), 30, 4)
	shared := make([]float32, 500)
	for i := range shared {
		shared[i] = []float32{0, 0.5, -0.25}[r.IntN(3)]
	}
	every := &File{Kind: KindModel, Job: "js", State: []byte(`{}`), Tensors: []*Tensor{
		{Name: "dense", Role: RoleParam, Shape: []int{7, 3}, Data: sparseWeight(r, 7, 3, 1)},
		{Name: "sparse", Role: RoleParam, Shape: []int{50, 60}, Data: sparseWeight(r, 50, 60, 0.05)},
		{Name: "quant", Role: RoleParam, Shape: []int{30, 40}, Data: wq, Quant: q},
		{Name: "shared", Role: RoleParam, Shape: []int{500}, Data: shared},
	}}
	fresh := filepath.Join(t.TempDir(), "every.arrow")
	if err := Write(fresh, every); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, tensor string }{
		{"testdata/training.arrow", "fc1"},
		{"testdata/model.arrow", "fc1.bias"},
		{fresh, "dense"},
	} {
		f, err := Read(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		js := jsRead(t, tc.path, tc.tensor)
		if js.Metadata["lathe.sha256"] != "sha256:"+f.SHA256 || js.Metadata["lathe.kind"] != f.Kind || js.State != string(f.State) {
			t.Errorf("%s: metadata %v", tc.path, js.Metadata)
		}
		if len(js.Rows) != len(f.Tensors) {
			t.Fatalf("%s: JavaScript sees %d tensors, Go %d", tc.path, len(js.Rows), len(f.Tensors))
		}
		for i, row := range js.Rows {
			g := f.Tensors[i]
			if row.Name != g.Name || row.Role != g.Role || !slices.Equal(row.Shape, g.Shape) || row.Encoding != g.Encoding {
				t.Errorf("%s row %d: JavaScript %+v, Go %s %s %v %s", tc.path, i, row, g.Name, g.Role, g.Shape, g.Encoding)
			}
		}
		raw, err := base64.StdEncoding.DecodeString(js.Values)
		if err != nil {
			t.Fatal(err)
		}
		want := f.Tensor(tc.tensor).Data
		if len(raw) != 4*len(want) {
			t.Fatalf("%s: JavaScript decoded %d bytes of %s, want %d", tc.path, len(raw), tc.tensor, 4*len(want))
		}
		for j, v := range want {
			b := uint32(raw[4*j]) | uint32(raw[4*j+1])<<8 | uint32(raw[4*j+2])<<16 | uint32(raw[4*j+3])<<24
			if b != math.Float32bits(v) {
				t.Fatalf("%s: %s[%d] is %g in JavaScript, %g in Go", tc.path, tc.tensor, j, math.Float32frombits(b), v)
			}
		}
	}
}
