package rundir

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/model"
)

// ModelFile is the name of the model file in a run directory.
const ModelFile = "model.arrow"

// ModelState is the state document of a model file: the architecture and
// what evaluation needs besides the tensors.
type ModelState struct {
	Spec    model.Spec  `json:"spec"`
	Input   model.Input `json:"input"`
	Dataset string      `json:"dataset"`
	// Split is how the dataset's test split was held out of a user's files
	// without a test file (none otherwise), so that eval scores the same
	// samples.
	Files data.FileOptions `json:"files,omitzero"`
	// Activations holds, per layer, the quantization of its output (the
	// frozen observer's range is the tensor "act/<layer>").
	Activations map[string]model.QuantSpec `json:"activations,omitempty"`
	// The layer table: the network's description (graph.Table, format 2;
	// format 1 files carry a forward list instead, still read), for
	// runtimes that do not rebuild the architecture from Spec (infer/).
	graph.Table
}

// ExportModel makes the model file of a trained model: each weight trained
// with quantization stored as its integer codes (the exact values the
// network computed with), every tensor in its smallest exact encoding. A
// model that trained with batch norms folded into its convolutions
// (Model.Fold) is stored folded (Model.FoldBatchNorms): the codes are
// those of the folded weights. The file records the dataset it was trained
// on and, for a user's files, how their test split was held out.
func ExportModel(m *model.Model, job, dataset string, files data.FileOptions) (*checkpoint.File, error) {
	if len(m.Fold) > 0 {
		fm, err := m.FoldBatchNorms()
		if err != nil {
			return nil, fmt.Errorf("run: %w", err)
		}
		m = fm
	}
	// Only what inference needs of the architecture: no dropout, no
	// initialisation (the file is read by size-conscious runtimes too; a
	// quantized weight's width is in its tensor).
	spec := m.Spec
	spec.Dropout, spec.InputDropout, spec.Init = 0, 0, ""
	st := ModelState{Spec: spec, Input: m.Input, Dataset: dataset, Files: files, Table: graph.NewTable(m.Net)}
	f := &checkpoint.File{Kind: checkpoint.KindModel, Job: job, Version: Version}
	for _, p := range m.Params {
		t := &checkpoint.Tensor{Name: p.Name, Role: checkpoint.RoleParam, Shape: slices.Clone(p.Shape), Data: p.Data()}
		if ctl := m.Quant[p.Name]; ctl != nil && ctl.Enabled {
			qp := compress.ParamsFor(ctl.Spec, t.Data, p.Shape[0])
			codes := qp.Quantize(t.Data)
			t.Data = make([]float32, len(codes))
			qp.Dequantize(t.Data, codes)
			t.Quant = &checkpoint.Quant{Bits: ctl.Spec.Bits, QMin: qp.QMin, Scale: qp.Scale, Zero: qp.Zero, Codes: codes}
		}
		f.Tensors = append(f.Tensors, t)
	}
	f.Tensors = appendBuffers(f.Tensors, m)
	for _, layer := range sortedKeys(m.ActQuant) {
		o := m.ActQuant[layer]
		if !o.Enabled {
			continue
		}
		if st.Activations == nil {
			st.Activations = map[string]model.QuantSpec{}
		}
		st.Activations[layer] = o.Spec
		f.Tensors = append(f.Tensors, &checkpoint.Tensor{Name: "act/" + layer, Role: checkpoint.RoleState, Shape: []int{2}, Data: []float32{o.Min, o.Max}})
	}
	var err error
	if f.State, err = json.Marshal(st); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	return f, nil
}

func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// LoadModel rebuilds a model from a model file: the architecture from its
// state, every parameter from its tensor (names and shapes must match),
// quantized activations with their frozen ranges.
func LoadModel(f *checkpoint.File) (*model.Model, *ModelState, error) {
	if f.Kind != checkpoint.KindModel {
		return nil, nil, fmt.Errorf("run: a %s file, not a model file", f.Kind)
	}
	var st ModelState
	if err := json.Unmarshal(f.State, &st); err != nil {
		return nil, nil, fmt.Errorf("run: model file state: %w", err)
	}
	net, err := st.Table.Resolve(graph.Shape{H: st.Input.Rows, W: st.Input.Cols, C: st.Input.Channels}, st.Input.Classes)
	if err != nil {
		return nil, nil, fmt.Errorf("run: model file: %w", err)
	}
	var m *model.Model
	if st.Spec.Arch == "" {
		// A network defined in Go (model.FromNetwork): the table is all.
		m, err = model.FromNetwork(net, "", 0)
	} else {
		m, err = model.New(st.Spec, st.Input, 0)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("run: model file architecture: %w", err)
	}
	// The table and the architecture must say the same (never misread).
	if !reflect.DeepEqual(net, *graph.NewTable(m.Net).Network) {
		return nil, nil, fmt.Errorf("run: model file: its layer table and its architecture (%s) disagree", st.Spec.Arch)
	}
	if err := setParams(m, f, checkpoint.RoleParam, ""); err != nil {
		return nil, nil, err
	}
	if err := setBuffers(m, f); err != nil {
		return nil, nil, err
	}
	for layer, spec := range st.Activations {
		t := f.Tensor("act/" + layer)
		if t == nil || len(t.Data) != 2 {
			return nil, nil, fmt.Errorf("run: model file: activation range of %s missing", layer)
		}
		if m.ActQuant == nil {
			m.ActQuant = map[string]*model.Observer{}
		}
		m.ActQuant[layer] = &model.Observer{Spec: spec, Min: t.Data[0], Max: t.Data[1], Initialized: true, Enabled: true, Frozen: true}
	}
	return m, &st, nil
}

// setParams copies the file's tensors named prefix+param into the model's
// parameters, refusing missing tensors and shapes that differ.
func setParams(m *model.Model, f *checkpoint.File, role, prefix string) error {
	for _, p := range m.Params {
		t := f.Tensor(prefix + p.Name)
		if t == nil || t.Role != role {
			return fmt.Errorf("run: the file has no %s tensor %q for the architecture it describes", role, prefix+p.Name)
		}
		if !slices.Equal(t.Shape, p.Shape) {
			return fmt.Errorf("run: tensor %q has shape %v, the architecture needs %v", t.Name, t.Shape, p.Shape)
		}
		copy(p.Data(), t.Data)
	}
	return nil
}

// appendBuffers adds the model's buffers (batch norms' running
// statistics) as state tensors under their own names.
func appendBuffers(ts []*checkpoint.Tensor, m *model.Model) []*checkpoint.Tensor {
	for _, b := range m.Buffers {
		ts = append(ts, &checkpoint.Tensor{Name: b.Name, Role: checkpoint.RoleState, Shape: slices.Clone(b.Shape), Data: b.Data()})
	}
	return ts
}

// setBuffers copies the file's buffer tensors into the model's buffers,
// refusing missing ones and shapes that differ.
func setBuffers(m *model.Model, f *checkpoint.File) error {
	for _, b := range m.Buffers {
		t := f.Tensor(b.Name)
		if t == nil || t.Role != checkpoint.RoleState {
			return fmt.Errorf("run: the file has no state tensor %q for the architecture it describes", b.Name)
		}
		if !slices.Equal(t.Shape, b.Shape) {
			return fmt.Errorf("run: tensor %q has shape %v, the architecture needs %v", t.Name, t.Shape, b.Shape)
		}
		copy(b.Data(), t.Data)
	}
	return nil
}
