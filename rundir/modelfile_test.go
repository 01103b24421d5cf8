package rundir

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/model"
)

// TestModelFileTable: a model file is written with the network's table
// (format 2) and read back; a file of the format before it (committed in
// checkpoint/testdata) still loads; a table that disagrees with the
// architecture, or a newer format, is refused — never misread.
func TestModelFileTable(t *testing.T) {
	m, err := model.New(model.Spec{Arch: "lenet5", Hidden: []int{16}, Conv: []int{4, 8}, Dropout: 0.3}, model.MNISTInput, 1)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ExportModel(m, "t", "mnist", data.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var st ModelState
	if err := json.Unmarshal(f.State, &st); err != nil || st.Format != graph.TableFormat || st.Network == nil || len(st.Network.Layers) != 6 {
		t.Fatalf("state %s: %v", f.State, err)
	}
	back, _, err := LoadModel(f)
	if err != nil {
		t.Fatal(err)
	}
	if back.NumParams() != m.NumParams() {
		t.Fatalf("%d parameters back, %d written", back.NumParams(), m.NumParams())
	}
	// A network defined in Go: the table is the whole architecture.
	custom, err := model.FromNetwork(graph.MLP(graph.Shape{H: 28, W: 28, C: 1}, []int{12, 7}, 10, 0.1), "", 3)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := ExportModel(custom, "t", "mnist", data.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm, _, err := LoadModel(cf); err != nil || cm.NumParams() != custom.NumParams() || len(cm.Net.Layers) != 3 {
		t.Fatalf("a network defined in Go: %v", err)
	}
	old, err := checkpoint.Read("../checkpoint/testdata/model.arrow")
	if err != nil {
		t.Fatal(err)
	}
	var ost ModelState
	if err := json.Unmarshal(old.State, &ost); err != nil || ost.Format != 0 || len(ost.Layers) == 0 {
		t.Fatalf("the committed file is not of format 1: %s", old.State)
	}
	if _, _, err := LoadModel(old); err != nil {
		t.Fatalf("format 1: %v", err)
	}
	for _, tc := range []struct{ spoil, want string }{
		{`"name":"fc1"`, "disagree"},
		{`"format":2`, "format 3"},
	} {
		g := *f
		repl := map[string]string{`"name":"fc1"`: `"name":"fc9"`, `"format":2`: `"format":3`}[tc.spoil]
		if !strings.Contains(string(f.State), tc.spoil) {
			t.Fatalf("the state lacks %s: %s", tc.spoil, f.State)
		}
		g.State = []byte(strings.Replace(string(f.State), tc.spoil, repl, 1))
		if _, _, err := LoadModel(&g); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", repl, err)
		}
	}
}
