// Command lathe is the user's tool for lathe's files:
//
//	lathe inspect FILE [--json]
//	lathe eval FILE [--dataset mnist|fashion-mnist|langid|text|kjv] [--data-dir DIR] [--json] [--runtime infer|graph]
//	lathe lint RECIPE [-var name=value]...
//	lathe bench FILE [--batch 1,8,64,256] [--json] [--kernel K]
//	lathe export FILE --onnx OUT.onnx [--int8]
//	lathe sample FILE [--prompt TEXT] [--bytes N] [--temperature T] [--seed S]
//
// Flags may come before or after the file argument.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/run"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

func main() { os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `usage:
  lathe import MODEL.onnx -o OUT.arrow [--dataset D]
                                              a float ONNX model (PyTorch's export) as a model file
  lathe compress FILE -o OUT.arrow [--bits 8 [--gptq]] [--activations 8] [--prune sparsegpt --sparsity 0.5|--nm 2:4]
                                              post-training compression: no training, a few hundred calibration samples
  lathe balance FILE -o OUT.arrow [--validation N]
                                              per-class offsets on the output bias, tuned on the validation split for macro accuracy
  lathe inspect FILE [--json]                 tensors, encodings and sizes of a model file or checkpoint
  lathe eval FILE [--dataset D] [--json]      test accuracy of a model file (a language model's: bits per character)
  lathe lint RECIPE [-var name=value]...      validate a recipe and print what happens when
  lathe bench FILE [--batch 1,8,64,256] [--json]
                                              latency and throughput of a model file in lathe's runtime
  lathe profile FILE [--batch 1] [--threads T] [-o profile.json]
                                              each layer's latency under each compression setting, measured here
  lathe export FILE --onnx OUT.onnx [--int8]  a model file as ONNX (onnxruntime and other engines)
  lathe report RUN_DIR [-o report.html] [--no-runtime]
                                              one HTML page of plots and tables of a run directory
  lathe sample FILE [--prompt TEXT] [--bytes 400] [--temperature 0.8] [--seed 1]
                                              text from a language model file, the same for a seed`

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "import":
		err = importCmd(args[1:], stdout, stderr)
	case "compress":
		err = compressCmd(args[1:], stdout, stderr)
	case "balance":
		err = balanceCmd(args[1:], stdout, stderr)
	case "inspect":
		err = inspect(args[1:], stdout, stderr)
	case "eval":
		err = eval(args[1:], stdout, stderr)
	case "lint":
		err = lint(args[1:], stdout, stderr)
	case "bench":
		err = bench(args[1:], stdout, stderr)
	case "export":
		err = export(args[1:], stdout, stderr)
	case "report":
		err = makeReport(args[1:], stdout, stderr)
	case "sample":
		err = sample(args[1:], stdout, stderr)
	case "profile":
		err = profileCmd(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "lathe: unknown command %q\n%s\n", args[0], usage)
		return 2
	}
	if err == errUsage {
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "lathe:", err)
		return 1
	}
	return 0
}

var errUsage = fmt.Errorf("usage")

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// parse parses flags that may come before or after the one positional
// argument, and returns it.
func parse(fs *flag.FlagSet, args []string, what string) (string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return "", errUsage
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != 1 {
		fmt.Fprintf(fs.Output(), "lathe %s: want exactly one %s, got %d\n", fs.Name(), what, len(pos))
		fs.Usage()
		return "", errUsage
	}
	return pos[0], nil
}

func inspect(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	path, err := parse(fs, args, "file")
	if err != nil {
		return err
	}
	f, err := readModel(path, "")
	if err != nil {
		return err
	}
	in := checkpoint.Inspect(f, path)
	if *asJSON {
		return writeJSON(stdout, in)
	}
	fmt.Fprintf(stdout, "%s: %s file of job %q (format %d, lathe %s)\n", path, in.Kind, in.Job, in.FormatVersion, in.LatheVersion)
	if f.Kind == checkpoint.KindModel {
		if m, st, err := rundir.LoadModel(f); err == nil {
			fmt.Fprintln(stdout, networkSummary(m.Net))
			if st.Dataset != "" {
				fmt.Fprintf(stdout, "dataset %s", st.Dataset)
				if fo := st.Files; fo.TestFraction > 0 {
					fmt.Fprintf(stdout, ", its test split %g of the training file (split seed %d)", fo.TestFraction, fo.Seed)
				}
				if fo := st.Files; fo.ImageSize != [2]int{} {
					fmt.Fprintf(stdout, ", images brought to %d×%d", fo.ImageSize[0], fo.ImageSize[1])
				}
				fmt.Fprintln(stdout)
			}
		}
	}
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "name\trole\tshape\tencoding\tindex\tvalues\tsparsity\tbits\tbytes\t")
	for _, t := range in.Tensors {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\t%.4f\t%d\t%d\t\n", t.Name, t.Role, t.Shape, t.Encoding, t.IndexFormat, t.ValueFormat, t.Sparsity, t.Bits, t.Bytes)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "\nfile_bytes %d\ndense_bytes %d\nratio %.2f\nweights_sha256 %s\n", in.FileBytes, in.DenseBytes, in.Ratio, in.WeightsSHA256)
	return nil
}

func frac(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Evaluation is eval's JSON output.
type Evaluation struct {
	File         string  `json:"file"`
	Dataset      string  `json:"dataset"`
	Samples      int     `json:"samples"`
	TestAccuracy float64 `json:"test_accuracy"`
	TestLoss     float64 `json:"test_loss"` // -1 where the runtime does not compute it
	// TestBPC is a language model's test loss in bits per character (the
	// graph runtime's).
	TestBPC float64 `json:"test_bpc,omitempty"`
	// MacroAccuracy is a classifier's mean of the classes' recalls
	// (PerClassRecall, named by ClassNames where the data names them).
	MacroAccuracy  float64   `json:"macro_accuracy,omitempty"`
	PerClassRecall []float64 `json:"per_class_recall,omitempty"`
	ClassNames     []string  `json:"class_names,omitempty"`
	Params         int       `json:"params"`
	Runtime        string    `json:"runtime"`
	Nonzero        int       `json:"nonzero"`
}

func eval(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	dataset := fs.String("dataset", "", "mnist, fashion-mnist, langid, text or kjv (default: the dataset the model was trained on)")
	dataDir := fs.String("data-dir", "", "the dataset's folder (IDX files; text: the class files, or one file as a corpus; default: where it is installed)")
	threads := fs.Int("threads", 0, "compute threads (default: all cores)")
	batch := fs.Int("batch", 1000, "evaluation batch")
	runtime := fs.String("runtime", "infer", "infer (lathe's inference runtime) or graph (the training graph, which also reports the loss)")
	path, err := parse(fs, args, "model file")
	if err != nil {
		return err
	}
	if *threads < 0 {
		return fmt.Errorf("--threads %d: a number of threads ≥ 1 (0: every core)", *threads)
	}
	mf, err := loadModelAndData(path, *dataset, *dataDir)
	if err != nil {
		return err
	}
	f, m, st, ds, test := mf.file, mf.model, mf.state, mf.dataset, mf.test
	if *batch <= 0 || *batch > maxBatch {
		return fmt.Errorf("--batch %d: a batch size in [1, %d]", *batch, maxBatch)
	}
	if st.Dataset != "" && ds != st.Dataset {
		fmt.Fprintf(stderr, "lathe eval: warning: %s was trained on %s; evaluating it on %s\n", path, st.Dataset, ds)
	}
	eng := cpu.New(cpu.Options{Threads: *threads, Logger: hclog.NewNullLogger(), Spin: infer.Spin})
	var acc, loss float64
	var classes []int
	switch *runtime {
	case "graph":
		preds, err := trainer.PredictModel(m, eng, test, *batch)
		if err != nil {
			return err
		}
		acc, loss, classes = preds.Accuracy(), preds.Loss, preds.Class
	case "infer":
		im, err := infer.Load(f, eng)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if classes, err = infer.Predict(im, test, *batch); err != nil {
			return err
		}
		for i, c := range classes {
			if c == int(test.Labels[i]) {
				acc++
			}
		}
		acc /= float64(len(classes))
		loss = math.NaN() // the runtime reports classes only
	default:
		return fmt.Errorf("--runtime %q: graph or infer", *runtime)
	}
	ev := Evaluation{File: path, Dataset: ds, Samples: test.Len(), TestAccuracy: acc, TestLoss: loss, Params: m.NumParams(), Runtime: *runtime}
	for _, p := range m.Params {
		for _, v := range p.Data() {
			if v != 0 {
				ev.Nonzero++
			}
		}
	}
	if math.IsNaN(loss) {
		ev.TestLoss = -1
	} else if test.Positions > 0 {
		ev.TestBPC = loss / math.Ln2
	}
	if test.Positions == 0 {
		ev.PerClassRecall, ev.MacroAccuracy = trainer.Predictions{Class: classes}.Recall(test.Labels, test.Classes)
		ev.ClassNames = test.ClassNames
		for i, r := range ev.PerClassRecall {
			if math.IsNaN(r) {
				ev.PerClassRecall[i] = -1 // a class the test set lacks
			}
		}
	}
	if *asJSON {
		return writeJSON(stdout, ev)
	}
	lossText := fmt.Sprintf("loss %.4f", loss)
	if ev.TestBPC > 0 {
		lossText += fmt.Sprintf(" (%.4f bits per character)", ev.TestBPC)
	}
	if math.IsNaN(loss) {
		lossText = "loss not computed by this runtime"
	}
	fmt.Fprintf(stdout, "%s on %s test (%d samples, %s runtime): accuracy %.4f, %s; %d parameters, %d non-zero\n",
		path, ds, ev.Samples, ev.Runtime, acc, lossText, ev.Params, ev.Nonzero)
	if ev.ClassNames != nil {
		var recalls []string
		for i, r := range ev.PerClassRecall {
			recalls = append(recalls, fmt.Sprintf("%s %.3f", ev.ClassNames[i], r))
		}
		fmt.Fprintf(stdout, "macro accuracy %.4f; recall %s\n", ev.MacroAccuracy, strings.Join(recalls, ", "))
	}
	return nil
}

func lint(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var vars multiFlag
	fs.Var(&vars, "var", "set a recipe variable: -var name=value (repeatable)")
	path, err := parse(fs, args, "recipe")
	if err != nil {
		return err
	}
	job, err := recipes.Load(path, vars)
	if err != nil {
		return err
	}
	// The same checks as a run's: valid only when they all pass.
	var plan bytes.Buffer
	if err := run.DryRun(&plan, job); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: valid\n\n", path)
	_, err = stdout.Write(plan.Bytes())
	return err
}
