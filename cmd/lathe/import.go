package main

import (
	"cmp"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/onnx"
	"github.com/lathe-ml/lathe/rundir"
)

// readModel reads a model file or imports an ONNX model as one.
var readModel = onnx.ReadModel

// modelAndData is a model file (or an imported ONNX model), its network
// and the dataset it is evaluated on.
type modelAndData struct {
	file        *checkpoint.File
	model       *model.Model
	state       *rundir.ModelState
	dataset     string
	files       data.FileOptions // how the dataset's files were split
	train, test *data.Set
}

// loadModelAndData reads the model at path and its dataset: dataset, or
// the one the file names (an imported model names none: then dataset is
// required) — its test split held out as the file records for the
// dataset it was trained on, image folders' images brought to the size
// it records (else to the model's input).
func loadModelAndData(path, dataset, dataDir string) (*modelAndData, error) {
	f, err := readModel(path, dataset)
	if err != nil {
		return nil, err
	}
	m, st, err := rundir.LoadModel(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ds := cmp.Or(dataset, st.Dataset)
	if ds == "" {
		return nil, fmt.Errorf("%s names no dataset (an imported model): pass --dataset", path)
	}
	var sp data.FileOptions
	if ds == st.Dataset {
		sp = st.Files
	}
	if ds == "images" && sp.ImageSize == [2]int{} { // images of other sizes: brought to the model's input
		sp.ImageSize = [2]int{m.Input.Rows, m.Input.Cols}
	}
	train, test, err := data.LoadWith(ds, dataDir, sp)
	if err != nil {
		return nil, err
	}
	return &modelAndData{file: f, model: m, state: st, dataset: ds, files: sp, train: train, test: test}, nil
}

func importCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("import", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "the model file to write (required)")
	dataset := fs.String("dataset", "", "the dataset the model takes ("+strings.Join(data.Datasets, ", ")+"), stored in the file for eval and recipes")
	job := fs.String("job", "", "the model file's job name (default: the ONNX file's name)")
	mean := fs.String("mean", "", "the input normalization's means, one per channel or one (comma-separated; inputs as pixel/255): the model's training normalized (x − mean)/std")
	std := fs.String("std", "", "the input normalization's standard deviations, one per channel or one")
	path, err := parse(fs, args, "ONNX model")
	if err != nil {
		return err
	}
	if *out == "" {
		fmt.Fprintln(stderr, "lathe import: -o OUT.arrow is required")
		return errUsage
	}
	if *dataset != "" && !slices.Contains(data.Datasets, *dataset) {
		return fmt.Errorf("--dataset %q: one of %s", *dataset, strings.Join(data.Datasets, ", "))
	}
	name := *job
	if name == "" {
		name = strings.TrimSuffix(filepath.Base(path), ".onnx")
	}
	opt := onnx.Options{Dataset: *dataset, Job: name}
	if opt.Mean, err = floatList("--mean", *mean); err != nil {
		return err
	}
	if opt.Std, err = floatList("--std", *std); err != nil {
		return err
	}
	m, err := onnx.ReadFile(path, opt)
	if err != nil {
		return err
	}
	if err := checkpoint.Write(*out, m.File); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s (opset %d, %s) → %s: %s, %d bytes\n", path, m.Opset, m.Producer, *out, networkSummary(m.Net), m.File.Bytes)
	return nil
}

// networkSummary describes a network in a line or two: its layers by kind,
// parameters, input, classes, and what it does to its input and output.
func networkSummary(net graph.Network) string {
	kinds := map[graph.Kind]int{}
	var order []graph.Kind
	var acts []string
	for _, l := range net.Layers {
		if kinds[l.Kind] == 0 {
			order = append(order, l.Kind)
		}
		kinds[l.Kind]++
		if l.Act != "" && l.Act != graph.Identity && !slices.Contains(acts, string(l.Act)) {
			acts = append(acts, string(l.Act))
		}
	}
	var parts []string
	for _, k := range order {
		parts = append(parts, fmt.Sprintf("%d %s", kinds[k], k))
	}
	in := net.Input
	s := fmt.Sprintf("%d layers (%s), %d parameters, input %dx%dx%d (C×H×W), %d classes", len(net.Layers), strings.Join(parts, ", "), net.NumParams(), in.C, in.H, in.W, net.Classes)
	if len(acts) > 0 {
		s += ", activations " + strings.Join(acts, ", ")
	}
	if net.Softmax {
		s += "; the output is the classes' softmax"
	}
	if z := net.Normalize; z != nil {
		s += fmt.Sprintf("\ninput normalized: (x − %v) / %v per channel, x = pixel/255", z.Mean, z.Std)
	}
	return s
}

// floatList parses comma-separated numbers.
func floatList(flag, s string) ([]float32, error) {
	if s == "" {
		return nil, nil
	}
	var out []float32
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 32)
		if err != nil {
			return nil, fmt.Errorf("%s %q: comma-separated numbers", flag, s)
		}
		out = append(out, float32(v))
	}
	return out, nil
}
