package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/infer"
)

// balanceResult is balance's JSON output.
type balanceResult struct {
	File         string     `json:"file"`
	Offsets      []float64  `json:"offsets"`
	ClassNames   []string   `json:"class_names,omitempty"`
	ValMacro     [2]float64 `json:"val_macro_accuracy"`  // before, after
	TestAccuracy [2]float64 `json:"test_accuracy"`       // before, after
	TestMacro    [2]float64 `json:"test_macro_accuracy"` // before, after
	ValSamples   int        `json:"val_samples"`
}

// balanceCmd is lathe balance: per-class offsets added to a classifier's
// output bias, tuned on the validation split for macro accuracy.
func balanceCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("balance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "the model file to write (required)")
	dataset := fs.String("dataset", "", "the data (default: the model's dataset)")
	dataDir := fs.String("data-dir", "", "the dataset's folder (default: where it is installed)")
	validation := fs.Int("validation", 5000, "the training set's last samples that are the validation split, as the run held them out (a dataset with its own validation split uses it)")
	asJSON := fs.Bool("json", false, "print the offsets and the accuracies as JSON")
	path, err := parse(fs, args, "model file")
	if err != nil {
		return err
	}
	if *out == "" {
		fmt.Fprintln(stderr, "lathe balance: -o OUT.arrow is required")
		return errUsage
	}
	mf, err := loadModelAndData(path, *dataset, *dataDir)
	if err != nil {
		return err
	}
	val, err := validationSplit(mf, *dataDir, *validation)
	if err != nil {
		return err
	}
	f, test := mf.file, mf.test
	rt, err := infer.Load(f, cpu.New(cpu.Options{Logger: hclog.NewNullLogger(), Spin: infer.Spin}))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	last := rt.Layers[len(rt.Layers)-1].Name
	bias := f.Tensor(last + ".bias")
	if bias == nil || bias.Quant != nil || len(bias.Data) != rt.Classes {
		return fmt.Errorf("%s: its output layer %s has no float bias of %d classes to offset", path, last, rt.Classes)
	}
	lv, err := infer.Logits(rt, val, 500)
	if err != nil {
		return err
	}
	lt, err := infer.Logits(rt, test, 500)
	if err != nil {
		return err
	}
	c := rt.Classes
	res := balanceResult{File: *out, Offsets: infer.ClassOffsets(lv, val.Labels, c), ClassNames: test.ClassNames, ValSamples: val.Len()}
	for k, off := range [][]float64{nil, res.Offsets} {
		res.ValMacro[k], _ = infer.Macro(lv, val.Labels, c, off)
		res.TestMacro[k], _ = infer.Macro(lt, test.Labels, c, off)
		res.TestAccuracy[k] = infer.Top1(lt, test.Labels, c, off)
	}
	for j, o := range res.Offsets {
		bias.Data[j] += float32(o)
	}
	if err := checkpoint.Write(*out, f); err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "%s → %s: offsets %.2f on %s's bias (tuned on %d validation samples)\n", path, *out, res.Offsets, last, val.Len())
	fmt.Fprintf(stdout, "validation macro accuracy %.4f → %.4f; test accuracy %.4f → %.4f, macro %.4f → %.4f\n",
		res.ValMacro[0], res.ValMacro[1], res.TestAccuracy[0], res.TestAccuracy[1], res.TestMacro[0], res.TestMacro[1])
	return nil
}

// validationSplit is the model's dataset's validation split: its own, or
// the training set's last n samples.
func validationSplit(mf *modelAndData, dataDir string, n int) (*data.Set, error) {
	if data.OwnValidation(mf.dataset, dataDir) || mf.files.ValidationFraction > 0 {
		_, val, _, err := data.LoadSplits(mf.dataset, dataDir, mf.files)
		return val, err
	}
	_, val, err := data.SplitValidation(mf.train, n)
	if err == nil && val.Len() == 0 {
		err = fmt.Errorf("--validation %d: no validation samples to tune on", n)
	}
	return val, err
}
