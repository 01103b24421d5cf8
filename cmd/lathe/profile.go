package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/profile"
)

// profileCmd measures a model file's layers under each compression
// setting and writes the profile (package profile).
func profileCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("profile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "profile.json", "the profile file to write")
	batch := fs.Int("batch", 1, "samples per forward call")
	threads := fs.Int("threads", 0, "compute threads (default: all cores)")
	widths := fs.String("widths", joinFloats(profile.DefaultWidths), "fractions of each channel group's channels kept, the first 1")
	formats := fs.String("formats", strings.Join(profile.DefaultFormats, ","), "weight formats: dense, sparse-S, 2:4")
	precisions := fs.String("precisions", strings.Join(profile.DefaultPrecisions, ","), "float, int8 (integer kernels) or both")
	budget := fs.Duration("budget", 150*time.Millisecond, "timing per variant network")
	check := fs.Int("check", 8, "random configurations built, measured and compared with the prediction (0: none)")
	seed := fs.Uint64("seed", 1, "seed of the random configurations")
	path, err := parse(fs, args, "model file")
	if err != nil {
		return err
	}
	if *batch <= 0 || *batch > maxBatch || *threads < 0 {
		return fmt.Errorf("--batch %d, --threads %d: a batch in [1, %d], threads ≥ 1 (0: every core)", *batch, *threads, maxBatch)
	}
	ws, err := parseFloats(*widths)
	if err != nil {
		return fmt.Errorf("--widths: %w", err)
	}
	f, err := readModel(path, "")
	if err != nil {
		return err
	}
	eng := cpu.New(cpu.Options{Threads: *threads, Logger: hclog.NewNullLogger(), Spin: infer.Spin})
	start := time.Now()
	p, err := profile.Measure(f, eng, profile.Options{Batch: *batch, Widths: ws, Formats: strings.Split(*formats, ","), Precisions: strings.Split(*precisions, ","), Budget: *budget, Model: path,
		Progress: func(done, total int, v profile.Variant) {
			if done == total || done%max(1, total/10) == 0 {
				fmt.Fprintf(stderr, "profile: %d/%d variants measured (%.0f s)\n", done, total, time.Since(start).Seconds())
			}
		}})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := p.Write(*out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d layers, %d channel groups, %d precisions × %d formats × %d widths, batch %d, %d threads; %d variants in %.0f s\n",
		path, len(p.Layers), len(p.Groups), len(p.Precisions), len(p.Formats), len(p.Widths), p.Batch, p.Threads, len(p.Variants), time.Since(start).Seconds())
	fmt.Fprintf(stdout, "dense network %.1f µs per call (overhead beyond the layers %.1f µs), %.0f bytes of runtime memory\n", p.DenseUs, p.OverheadUs, p.DenseMemory)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "variant\tkeep\tmeasured µs\tpredicted µs\terror\tmemory\tpredicted\terror\t")
	worst, worstMem := 0.0, 0.0
	for _, v := range p.Variants {
		e, em := v.PredictedUs/v.MeasuredUs-1, v.PredictedMemory/float64(v.Memory)-1
		worst, worstMem = math.Max(worst, math.Abs(e)), math.Max(worstMem, math.Abs(em))
		if allOne(v.Keep) || v.Format == profile.Dense {
			fmt.Fprintf(tw, "%s\t%v\t%.1f\t%.1f\t%+.1f%%\t%d\t%.0f\t%+.1f%%\t\n", profile.Key(v.Precision, v.Format), v.Keep, v.MeasuredUs, v.PredictedUs, 100*e, v.Memory, v.PredictedMemory, 100*em)
		}
	}
	r := rand.New(rand.NewPCG(*seed, 1))
	for i := range *check {
		c := p.Random(r)
		pred, err := p.Predict(c)
		if err != nil {
			return err
		}
		predMem, err := p.PredictMemory(c)
		if err != nil {
			return err
		}
		meas, mem, err := profile.Measured(f, eng, c, p.Batch, *budget)
		if err != nil {
			return err
		}
		e, em := pred/meas-1, predMem/float64(mem)-1
		worst, worstMem = math.Max(worst, math.Abs(e)), math.Max(worstMem, math.Abs(em))
		fmt.Fprintf(tw, "random %d (%s)\t%v\t%.1f\t%.1f\t%+.1f%%\t%d\t%.0f\t%+.1f%%\t\n", i+1, c.Precision(), c.Keep, meas, pred, 100*e, mem, predMem, 100*em)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "largest prediction error %.1f%% (latency), %.1f%% (memory); profile: %s\n", 100*worst, 100*worstMem, *out)
	return nil
}

func allOne(v []float64) bool {
	for _, x := range v {
		if x != 1 {
			return false
		}
	}
	return true
}

func parseFloats(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func joinFloats(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'g', -1, 64)
	}
	return strings.Join(s, ",")
}
