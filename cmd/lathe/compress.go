package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/ptq"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/run"
	"github.com/lathe-ml/lathe/rundir"
)

// compressCmd is lathe compress: post-training compression of a model
// file (or an ONNX model), no training.
func compressCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("compress", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "the model file to write (required)")
	dataset := fs.String("dataset", "", "the calibration and test data (default: the model's dataset)")
	dataDir := fs.String("data-dir", "", "the dataset's folder (default: where it is installed)")
	var o ptq.Options
	fs.IntVar(&o.Bits, "bits", 0, "weight bits, 2 to 8, per output channel (0: float)")
	fs.BoolVar(&o.GPTQ, "gptq", false, "GPTQ: compensate each column's rounding on the columns after it (else round to nearest)")
	fs.IntVar(&o.Activations, "activations", 0, "activation bits, 2 to 8 (0: float); 8 with --bits 8 runs the runtime's integer kernels")
	fs.StringVar(&o.Range, "range", "minmax", "activation ranges: minmax, percentile or mse")
	fs.Float64Var(&o.Percentile, "percentile", 99.99, "the percentile of --range percentile")
	fs.BoolVar(&o.BiasCorrection, "bias-correction", false, "add each layer's mean output change on the calibration inputs to its bias")
	fs.StringVar(&o.Prune, "prune", "", "one-shot pruning: magnitude or sparsegpt")
	fs.Float64Var(&o.Sparsity, "sparsity", 0.5, "the pruned share of each linear and convolution weight")
	nm := fs.String("nm", "", "N:M pruning instead of a share, e.g. 2:4")
	samples := fs.Int("samples", 512, "calibration samples, drawn from the training split")
	seed := fs.Uint64("seed", 1, "the calibration draw's seed")
	onnxOut := fs.String("onnx", "", "also export the result as ONNX to this file")
	noEval := fs.Bool("no-eval", false, "skip the test-set accuracy before and after")
	asJSON := fs.Bool("json", false, "print what was done (each layer's calibration error, the activation ranges, the accuracies) as JSON")
	recipe := fs.String("recipe", "", "take the compression from this recipe's post_training block, and the data, validation split and calibration draw from its job (instead of the flags above)")
	var vars multiFlag
	fs.Var(&vars, "var", "set a recipe variable: -var name=value (repeatable)")
	path, err := parse(fs, args, "model file")
	if err != nil {
		return err
	}
	if *out == "" {
		fmt.Fprintln(stderr, "lathe compress: -o OUT.arrow is required")
		return errUsage
	}
	var in *compressInput
	if *recipe != "" {
		in, err = fromRecipe(fs, path, *recipe, vars)
	} else {
		in, err = fromFlags(path, *dataset, *dataDir, *nm, *samples, *seed, o)
	}
	if err != nil {
		return err
	}
	f, ds, test, x, o := in.file, in.dataset, in.test, in.x, in.opt
	eng := cpu.New(cpu.Options{Logger: hclog.NewNullLogger(), Spin: infer.Spin})
	if !*asJSON {
		o.Progress = func(r ptq.LayerReport) {
			fmt.Fprintf(stderr, "  %-24s %-10s output error %.4g (plain method %.4g), sparsity %.3f\n", r.Layer, r.Method, r.Error, r.Baseline, r.Sparsity)
		}
	}
	res, rep, err := ptq.Compress(f, x, eng, o)
	if err != nil {
		return err
	}
	if err := checkpoint.Write(*out, res); err != nil {
		return err
	}
	if !*asJSON {
		fmt.Fprintf(stdout, "%s → %s: %d calibration samples, %d batch norms folded, %d layers; %d bytes (was %d)\n",
			path, *out, rep.Samples, rep.Folded, len(rep.Layers), res.Bytes, f.Bytes)
	}
	result := compressResult{Report: rep, File: *out, Bytes: res.Bytes, InputBytes: f.Bytes, Dataset: ds}
	if *onnxOut != "" {
		var buf bytes.Buffer
		info, err := infer.ExportONNX(res, &buf, infer.ONNXOptions{Int8: true, Producer: rundir.Version})
		if err != nil {
			return err
		}
		if err := os.WriteFile(*onnxOut, buf.Bytes(), 0o644); err != nil {
			return err
		}
		if !*asJSON {
			fmt.Fprintf(stdout, "ONNX: %s (opset %d, %d bytes)\n", *onnxOut, info.Opset, info.Bytes)
		}
	}
	if *noEval {
		if *asJSON {
			return writeJSON(stdout, result)
		}
		return nil
	}
	for _, file := range []*checkpoint.File{f, res} {
		rt, err := infer.Load(file, eng)
		if err != nil {
			return err
		}
		acc, err := infer.Accuracy(rt, test, 500)
		if err != nil {
			return err
		}
		result.Accuracy = append(result.Accuracy, acc)
	}
	if *asJSON {
		return writeJSON(stdout, result)
	}
	fmt.Fprintf(stdout, "test accuracy on %s (lathe's runtime): %.4f before, %.4f after\n", ds, result.Accuracy[0], result.Accuracy[1])
	return nil
}

// compressInput is what compress works on: the model file, its dataset's
// test split, the calibration samples and the compression.
type compressInput struct {
	file    *checkpoint.File
	dataset string
	test    *data.Set
	x       []float32
	opt     ptq.Options
}

// fromFlags takes the compression from the command's flags.
func fromFlags(path, dataset, dataDir, nm string, samples int, seed uint64, o ptq.Options) (*compressInput, error) {
	if nm != "" {
		if _, err := fmt.Sscanf(nm, "%d:%d", &o.N, &o.M); err != nil {
			return nil, fmt.Errorf("--nm %q: N:M, e.g. 2:4", nm)
		}
	}
	if o.Prune == "" {
		o.Sparsity = 0
	}
	mf, err := loadModelAndData(path, dataset, dataDir)
	if err != nil {
		return nil, err
	}
	return &compressInput{file: mf.file, dataset: mf.dataset, test: mf.test, x: ptq.Calibration(mf.train, samples, seed), opt: o}, nil
}

// fromRecipe takes the compression from a recipe's post_training block
// and the data from its job, as a run calibrates; the model is path (read
// with the model block's normalization when it is the recipe's
// model.file). The flags the recipe replaces are refused.
func fromRecipe(fs *flag.FlagSet, path, recipe string, vars []string) (*compressInput, error) {
	var clash []string
	fs.Visit(func(f *flag.Flag) {
		if !slices.Contains([]string{"o", "onnx", "no-eval", "json", "recipe", "var"}, f.Name) {
			clash = append(clash, "--"+f.Name)
		}
	})
	if len(clash) > 0 {
		return nil, fmt.Errorf("%s: with --recipe the recipe says these (its post_training block, dataset, validation and seed)", strings.Join(clash, ", "))
	}
	job, err := recipes.Load(recipe, vars)
	if err != nil {
		return nil, err
	}
	if job.PostTraining == nil {
		return nil, fmt.Errorf("%s: no post_training block to take the compression from", recipe)
	}
	var f *checkpoint.File
	if a, b := absPath(path), absPath(job.Model.File); job.Model.File != "" && a == b {
		f, err = run.RecipeModelFile(job)
	} else {
		f, err = readModel(path, job.Dataset)
	}
	if err != nil {
		return nil, err
	}
	x, err := run.CalibrationSamples(job)
	if err != nil {
		return nil, err
	}
	_, test, err := data.LoadWith(job.Dataset, job.DataDir, job.Files())
	if err != nil {
		return nil, err
	}
	return &compressInput{file: f, dataset: job.Dataset, test: test, x: x, opt: run.PostTrainingOptions(job.PostTraining)}, nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// compressResult is compress's JSON output.
type compressResult struct {
	*ptq.Report
	File       string `json:"file"`
	Bytes      int    `json:"bytes"`
	InputBytes int    `json:"input_bytes"`
	Dataset    string `json:"dataset"`
	// Accuracy is the test accuracy before and after, in lathe's runtime.
	Accuracy []float64 `json:"test_accuracy,omitempty"`
}
