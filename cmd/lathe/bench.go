package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/infer"
)

// BenchResult is one batch size's measurement.
type BenchResult struct {
	Batch            int     `json:"batch"`
	P50us            float64 `json:"p50_us"`
	P99us            float64 `json:"p99_us"`
	SamplesPerSecond float64 `json:"samples_per_second"`
	Calls            int     `json:"calls"`
}

// BenchLayer is one layer's kernel choice.
type BenchLayer struct {
	Name       string  `json:"name"`
	Shape      []int   `json:"shape"`
	Nonzero    int     `json:"nonzero"`
	Small      string  `json:"kernel_batch_le_8"`
	Large      string  `json:"kernel_batch_gt_8"`
	DenseB1us  float64 `json:"dense_batch1_us"`
	CSRB1us    float64 `json:"csr_batch1_us"`
	DenseB64us float64 `json:"dense_batch64_us"`
	CSRB64us   float64 `json:"csr_batch64_us"`
}

// Bench is bench's JSON output.
type Bench struct {
	File    string        `json:"file"`
	Threads int           `json:"threads"`
	Results []BenchResult `json:"results"`
	Layers  []BenchLayer  `json:"layers"`
}

func bench(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	batches := fs.String("batch", "1,8,64,256", "batch sizes, comma-separated")
	threads := fs.Int("threads", 0, "compute threads (default: all cores)")
	seconds := fs.Float64("seconds", 1, "time spent per batch size")
	path, err := parse(fs, args, "model file")
	if err != nil {
		return err
	}
	var sizes []int
	for _, s := range strings.Split(*batches, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return fmt.Errorf("--batch: %q is not a positive batch size", s)
		}
		sizes = append(sizes, n)
	}
	f, err := checkpoint.Read(path)
	if err != nil {
		return err
	}
	eng := cpu.New(cpu.Options{Threads: *threads, Logger: hclog.NewNullLogger()})
	m, err := infer.Load(f, eng)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	out := Bench{File: path, Threads: eng.Threads()}
	for _, l := range m.Layers {
		d1, d64 := l.Timing(infer.Dense)
		c1, c64 := l.Timing(infer.CSR)
		out.Layers = append(out.Layers, BenchLayer{Name: l.Name, Shape: []int{l.Out, l.In}, Nonzero: l.Nonzero, Small: l.Small, Large: l.Large,
			DenseB1us: us(d1), CSRB1us: us(c1), DenseB64us: us(d64), CSRB64us: us(c64)})
	}
	for _, batch := range sizes {
		x := make([]float32, batch*m.Features)
		for i := range x {
			x[i] = float32(i%255) / 255
		}
		for range 10 {
			if _, err := m.Forward(x, batch); err != nil {
				return err
			}
		}
		var times []time.Duration
		start := time.Now()
		for len(times) < 50 || time.Since(start).Seconds() < *seconds {
			t0 := time.Now()
			m.Forward(x, batch)
			times = append(times, time.Since(t0))
		}
		total := time.Since(start)
		slices.Sort(times)
		out.Results = append(out.Results, BenchResult{Batch: batch, Calls: len(times),
			P50us: us(times[len(times)/2]), P99us: us(times[len(times)*99/100]),
			SamplesPerSecond: float64(batch*len(times)) / total.Seconds()})
	}
	if *asJSON {
		return writeJSON(stdout, out)
	}
	fmt.Fprintf(stdout, "%s: lathe runtime, %d threads\n\n", path, out.Threads)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "layer\tshape\tnon-zero\tdense b1 µs\tcsr b1 µs\tdense b64 µs\tcsr b64 µs\tkernel b≤8\tkernel b>8\t")
	for _, l := range out.Layers {
		fmt.Fprintf(tw, "%s\t%v\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t%s\t\n", l.Name, l.Shape, l.Nonzero, l.DenseB1us, l.CSRB1us, l.DenseB64us, l.CSRB64us, l.Small, l.Large)
	}
	tw.Flush()
	fmt.Fprintln(stdout)
	tw = tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "batch\tp50 µs\tp99 µs\tsamples/s\tcalls\t")
	for _, r := range out.Results {
		fmt.Fprintf(tw, "%d\t%.1f\t%.1f\t%.0f\t%d\t\n", r.Batch, r.P50us, r.P99us, r.SamplesPerSecond, r.Calls)
	}
	return tw.Flush()
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
