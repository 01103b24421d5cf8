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

// BenchLayer is one layer's kernel timings and choices at the probe
// batches (infer.Probes).
type BenchLayer struct {
	Name    string    `json:"name"`
	Kind    string    `json:"kind"`
	Shape   []int     `json:"shape"` // [out, in]; a convolution's in is its patch size
	Nonzero int       `json:"nonzero"`
	Probes  []int     `json:"probe_batches"`
	Kernels []string  `json:"kernels"` // chosen at each probe
	DenseUs []float64 `json:"dense_us"`
	CSRUs   []float64 `json:"csr_us"`
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
		if l.Kind == "maxpool" {
			continue
		}
		bl := BenchLayer{Name: l.Name, Kind: l.Kind, Shape: []int{l.Out, l.In}, Nonzero: l.Nonzero, Probes: infer.Probes, Kernels: l.Kernels}
		for i := range infer.Probes {
			bl.DenseUs = append(bl.DenseUs, us(l.Timing(infer.Dense)[i]))
			bl.CSRUs = append(bl.CSRUs, us(l.Timing(infer.CSR)[i]))
		}
		out.Layers = append(out.Layers, bl)
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
	head := "layer\tshape\tnon-zero\t"
	for _, p := range infer.Probes {
		head += fmt.Sprintf("b%d dense µs\tb%d csr µs\tb%d kernel\t", p, p, p)
	}
	fmt.Fprintln(tw, head)
	for _, l := range out.Layers {
		row := fmt.Sprintf("%s\t%v\t%d\t", l.Name, l.Shape, l.Nonzero)
		for i := range l.Probes {
			row += fmt.Sprintf("%.1f\t%.1f\t%s\t", l.DenseUs[i], l.CSRUs[i], l.Kernels[i])
		}
		fmt.Fprintln(tw, row)
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
