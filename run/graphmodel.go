package run

import (
	"errors"
	"path/filepath"
	"slices"

	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/onnx"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
)

// newModel builds the recipe's model: a preset from its spec, a graph
// model's network from its layer blocks, or a model file's network with
// its trained weights.
func newModel(job *recipes.Job, info data.Info) (*model.Model, error) {
	if job.Model.File != "" {
		return modelFromFile(job, info)
	}
	var m *model.Model
	if job.Model.Arch != "graph" {
		var err error
		if m, err = model.New(specOf(job.Model), inputOf(info), job.Seed); err != nil {
			return nil, job.Errorf("model.arch", "%v", err)
		}
	} else {
		net, err := graphNetwork(job, info)
		if err != nil {
			return nil, err
		}
		if m, err = model.FromNetwork(net, job.Model.Init, job.Seed); err != nil {
			return nil, job.Errorf("model.arch", "%v", err)
		}
	}
	return m, normalize(job, m)
}

// normalize gives a network the recipe builds the model block's input
// normalization, if it has one (one value: every channel).
func normalize(job *recipes.Job, m *model.Model) error {
	if len(job.Model.Mean) == 0 {
		return nil
	}
	mean, std := float32s(job.Model.Mean), float32s(job.Model.Std)
	if c := m.Net.Input.C; len(mean) == 1 && c > 1 {
		mean, std = slices.Repeat(mean, c), slices.Repeat(std, c)
	}
	m.Net.Normalize = &graph.Normalization{Mean: mean, Std: std}
	if err := m.Net.Validate(); err != nil {
		return job.Errorf("model.mean", "%v", err)
	}
	return nil
}

func float32s(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// importOptions are what reading a recipe's model file needs: the job's
// dataset and the block's input normalization (for an ONNX file).
func importOptions(job *recipes.Job, m recipes.Model) onnx.Options {
	return onnx.Options{Dataset: job.Dataset, Mean: float32s(m.Mean), Std: float32s(m.Std)}
}

// graphNetwork is a graph model's network, its shapes checked: each error
// points at the layer block it comes from (a repeated layer's block for
// every repetition).
func graphNetwork(job *recipes.Job, info data.Info) (graph.Network, error) {
	m := job.Model
	for field, set := range map[string]bool{"hidden": len(m.Hidden) > 0, "depth": m.Depth > 0, "width": m.Width > 0,
		"dropout": m.Dropout > 0, "input_dropout": m.InputDropout > 0} {
		if set {
			return graph.Network{}, job.Errorf("model."+field, "model.%s belongs to the presets; a graph model says it per layer", field)
		}
	}
	in := inputOf(info)
	c := graph.NewChain(graph.Shape{H: in.Rows, W: in.Cols, C: in.Channels}, in.Classes)
	var inErr error // the first layer whose in is not what it receives
	at := map[string]int{}
	inAt := -1
	for i, l := range m.Expand() {
		c.Add(graph.Layer{Name: l.Name, Kind: graph.Kind(l.Kind), Inputs: l.Inputs, Out: l.Out, Kernel: l.Kernel, Stride: l.Stride,
			Pad: l.Pad, Groups: l.Groups, NoBias: !l.Bias, Act: graph.Activation(l.Act), Dropout: l.Dropout,
			Heads: l.Heads, Causal: l.Causal, Vocab: l.Vocab, SkipPadding: l.SkipPadding})
		at[l.Name] = i
		added := c.Net.Layers[i]
		if got := added.In.C; l.In > 0 && got != l.In && inErr == nil { // (a linear layer's In is {1, 1, features})
			inErr, inAt = job.Errorf("model.layer."+l.Name, "layer %s receives %d channels (%v), not the %d its in says", l.Name, got, added.In, l.In), i
		}
	}
	// The error of the earliest layer: a later one may only follow from it.
	err := c.Net.Validate()
	var le *graph.LayerError
	errors.As(err, &le)
	switch {
	case inErr != nil && (le == nil || at[le.Layer] > inAt):
		return graph.Network{}, inErr
	case le != nil:
		return graph.Network{}, job.Errorf("model.layer."+le.Layer, "%v", err)
	case err != nil:
		return graph.Network{}, job.Errorf("model", "%v", err)
	}
	return c.Net, nil
}

// modelFromFile loads the model file a recipe's model block names: its
// network and weights, as trained (quantized weights as the values their
// codes stand for; a file's quantization and activation ranges are the
// recipe's to set again). The file must have been trained on the job's
// data, its input and classes the dataset's.
func modelFromFile(job *recipes.Job, info data.Info) (*model.Model, error) {
	path := job.Model.File
	f, err := onnx.ReadModelWith(path, importOptions(job, job.Model))
	if err != nil {
		return nil, job.Errorf("model.file", "%v", err)
	}
	if job.PostTraining != nil {
		if f, err = postTraining(job, f); err != nil {
			return nil, err
		}
	}
	m, st, err := rundir.LoadModel(f)
	if err != nil {
		return nil, job.Errorf("model.file", "%s: %v", path, err)
	}
	if st.Dataset != job.Dataset {
		return nil, job.Errorf("model.file", "%s was trained on %s, the job trains on %s", path, st.Dataset, job.Dataset)
	}
	if in := inputOf(info); m.Input != in {
		return nil, job.Errorf("model.file", "%s takes %+v, the dataset gives %+v", path, m.Input, in)
	}
	m.Quant, m.ActQuant = nil, nil
	return m, nil
}

// modelName is what logs and the summary call the recipe's model: its
// arch, or its file's name.
func modelName(job *recipes.Job) string {
	if job.Model.File != "" {
		return filepath.Base(job.Model.File)
	}
	return job.Model.Arch
}
