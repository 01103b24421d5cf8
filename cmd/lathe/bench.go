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
	// Bytes of parameters the chosen kernels read per call, and per sample.
	WeightBytesPerCall   int     `json:"weight_bytes_per_call"`
	WeightBytesPerSample float64 `json:"weight_bytes_per_sample"`
	CPUSecondsPerCall    float64 `json:"cpu_seconds_per_call"`
	// Energy per sample in microjoules; the report's energy_source says
	// whether it was measured (RAPL) or estimated from CPU time.
	MicrojoulesPerSample float64  `json:"microjoules_per_sample"`
	Kernels              []string `json:"kernels"` // per layer, as in layers
}

// BenchLayer is one layer's kernel timings and choices at the probe
// batches (infer.Probes).
type BenchLayer struct {
	Name    string   `json:"name"`
	Kind    string   `json:"kind"`
	Shape   []int    `json:"shape"` // [out, in]; a convolution's in is its patch size
	Nonzero int      `json:"nonzero"`
	Probes  []int    `json:"probe_batches"`
	Kernels []string `json:"kernels"` // chosen at each probe
	// Per probe; -1: not timed (4× slower than the fastest at a smaller
	// probe). Absent where the layer runs only on integer codes (its
	// output is quantized: infer.Layer.Candidates).
	DenseUs  []float64 `json:"dense_us,omitempty"`
	CSRUs    []float64 `json:"csr_us,omitempty"`
	CSRTUs   []float64 `json:"csrt_us,omitempty"`   // linear layers only
	Int8Us   []float64 `json:"int8_us,omitempty"`   // layers with quantized weights and input only
	NMUs     []float64 `json:"nm_us,omitempty"`     // 2:4-sparse layers only
	DirectUs []float64 `json:"direct_us,omitempty"` // convolutions the direct kernel runs
	// Convolutions with quantized weights and input, symmetric weights.
	DirectInt8Us []float64 `json:"direct_int8_us,omitempty"`
	// Per sample: dense FLOPs (every weight) and effective ones (non-zero weights).
	DenseFLOPs     int `json:"dense_flops"`
	EffectiveFLOPs int `json:"effective_flops"`
}

// Bench is bench's JSON output.
type Bench struct {
	File    string        `json:"file"`
	Threads int           `json:"threads"`
	Results []BenchResult `json:"results"`
	Layers  []BenchLayer  `json:"layers"`
	// Per sample, over all layers.
	DenseFLOPs     int     `json:"dense_flops"`
	EffectiveFLOPs int     `json:"effective_flops"`
	ModelBytes     int     `json:"model_bytes"`    // parameters and buffers the runtime holds
	PeakRSSBytes   int     `json:"peak_rss_bytes"` // the process's peak resident memory (Linux)
	EnergySource   string  `json:"energy_source"`
	LoadSeconds    float64 `json:"load_seconds"` // reading the file and timing the kernels
}

func bench(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	batches := fs.String("batch", "1,8,64,256", "batch sizes, comma-separated")
	threads := fs.Int("threads", 0, "compute threads (default: all cores)")
	seconds := fs.Float64("seconds", 1, "time spent per batch size")
	force := fs.String("kernel", "", "run every layer with this kernel where it has it, dense elsewhere: dense, csr, csr-t, int8, nm-2:4, direct or direct-int8 (default: the fastest measured)")
	path, err := parse(fs, args, "model file")
	if err != nil {
		return err
	}
	if *threads < 0 {
		return fmt.Errorf("--threads %d: a number of threads ≥ 1 (0: every core)", *threads)
	}
	var sizes []int
	for _, s := range strings.Split(*batches, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 || n > maxBatch {
			return fmt.Errorf("--batch: %q is not a batch size in [1, %d] (the runtime's buffers grow with it)", s, maxBatch)
		}
		sizes = append(sizes, n)
	}
	f, err := readModel(path, "")
	if err != nil {
		return err
	}
	eng := cpu.New(cpu.Options{Threads: *threads, Logger: hclog.NewNullLogger(), Spin: infer.Spin})
	t0 := time.Now()
	m, err := infer.Load(f, eng)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if *force != "" {
		if err := m.Force(*force); err != nil {
			return fmt.Errorf("--kernel: %w", err)
		}
	}
	meter := newEnergyMeter()
	out := Bench{File: path, Threads: eng.Threads(), LoadSeconds: time.Since(t0).Seconds(), EnergySource: meter.Source()}
	for _, l := range m.Layers {
		if !l.Weighted() {
			continue
		}
		bl := BenchLayer{Name: l.Name, Kind: l.Kind, Shape: []int{l.Out, l.In}, Nonzero: l.Nonzero, Probes: infer.Probes, Kernels: l.Kernels}
		bl.DenseFLOPs, bl.EffectiveFLOPs = l.FLOPs()
		out.DenseFLOPs += bl.DenseFLOPs
		out.EffectiveFLOPs += bl.EffectiveFLOPs
		for i := range infer.Probes {
			if t := l.Timing(infer.Dense); t != nil {
				bl.DenseUs = append(bl.DenseUs, us(t[i]))
			}
			if t := l.Timing(infer.CSR); t != nil {
				bl.CSRUs = append(bl.CSRUs, us(t[i]))
			}
			if t := l.Timing(infer.CSRT); t != nil {
				bl.CSRTUs = append(bl.CSRTUs, us(t[i]))
			}
			if t := l.Timing(infer.Int8); t != nil {
				bl.Int8Us = append(bl.Int8Us, us(t[i]))
			}
			if t := l.Timing(infer.NM); t != nil {
				bl.NMUs = append(bl.NMUs, us(t[i]))
			}
			if t := l.Timing(infer.Direct); t != nil {
				bl.DirectUs = append(bl.DirectUs, us(t[i]))
			}
			if t := l.Timing(infer.DirectInt8); t != nil {
				bl.DirectInt8Us = append(bl.DirectInt8Us, us(t[i]))
			}
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
		meter.Start()
		start := time.Now()
		for len(times) < 50 || time.Since(start).Seconds() < *seconds {
			t0 := time.Now()
			m.Forward(x, batch)
			times = append(times, time.Since(t0))
		}
		total := time.Since(start)
		joules, cpuUsed := meter.Stop()
		slices.Sort(times)
		r := BenchResult{Batch: batch, Calls: len(times),
			P50us: us(times[len(times)/2]), P99us: us(times[len(times)*99/100]),
			SamplesPerSecond:     float64(batch*len(times)) / total.Seconds(),
			CPUSecondsPerCall:    cpuUsed.Seconds() / float64(len(times)),
			MicrojoulesPerSample: joules * 1e6 / float64(batch*len(times))}
		for _, l := range m.Layers {
			if l.Weighted() {
				k := l.Kernel(batch)
				r.Kernels = append(r.Kernels, k)
				r.WeightBytesPerCall += l.WeightBytes(k)
			}
		}
		r.WeightBytesPerSample = float64(r.WeightBytesPerCall) / float64(batch)
		out.Results = append(out.Results, r)
	}
	out.ModelBytes, out.PeakRSSBytes = m.Bytes(), peakRSS()
	if *asJSON {
		return writeJSON(stdout, out)
	}
	fmt.Fprintf(stdout, "%s: lathe runtime, %d threads; kernels timed at load (%.2f s)\n\n", path, out.Threads, out.LoadSeconds)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "layer\tshape\tnon-zero\tdense/eff. MFLOP\t"
	for _, p := range infer.Probes {
		head += fmt.Sprintf("b%d dense µs\tcsr\tcsr-t\tint8\tnm\tdirect\tdirect-int8\tkernel\t", p)
	}
	fmt.Fprintln(tw, head)
	for _, l := range out.Layers {
		row := fmt.Sprintf("%s\t%v\t%d\t%.3f/%.3f\t", l.Name, l.Shape, l.Nonzero, float64(l.DenseFLOPs)/1e6, float64(l.EffectiveFLOPs)/1e6)
		for i := range l.Probes {
			opt := func(v []float64) string {
				if v == nil {
					return "n/a"
				}
				return usText(v[i])
			}
			row += fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t", opt(l.DenseUs), opt(l.CSRUs), opt(l.CSRTUs), opt(l.Int8Us), opt(l.NMUs), opt(l.DirectUs), opt(l.DirectInt8Us), l.Kernels[i])
		}
		fmt.Fprintln(tw, row)
	}
	tw.Flush()
	fmt.Fprintln(stdout)
	tw = tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "batch\tp50 µs\tp99 µs\tsamples/s\tcalls\tweight bytes/sample\tµJ/sample\tkernels\t")
	for _, r := range out.Results {
		fmt.Fprintf(tw, "%d\t%.1f\t%.1f\t%.0f\t%d\t%.0f\t%.1f\t%s\t\n", r.Batch, r.P50us, r.P99us, r.SamplesPerSecond, r.Calls,
			r.WeightBytesPerSample, r.MicrojoulesPerSample, strings.Join(r.Kernels, ","))
	}
	tw.Flush()
	fmt.Fprintf(stdout, "\nper sample: %.3f MFLOP dense, %.3f effective (%.1f%%)\nmodel memory %d bytes; peak RSS %d bytes\nenergy: %s\n",
		float64(out.DenseFLOPs)/1e6, float64(out.EffectiveFLOPs)/1e6, 100*frac(out.EffectiveFLOPs, out.DenseFLOPs), out.ModelBytes, out.PeakRSSBytes, out.EnergySource)
	return nil
}

// us is a duration in µs; a kernel not timed (infer.NotTimed) is -1.
func us(d time.Duration) float64 {
	if d == infer.NotTimed {
		return -1
	}
	return float64(d.Nanoseconds()) / 1e3
}

// usText prints a timing, or — where the kernel was not timed.
func usText(v float64) string {
	if v < 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f", v)
}

// maxBatch bounds the batch sizes bench and eval take: a batch's input and
// activations are held at once (at 65 536 samples, a LeNet-300-100 needs
// ≈ 300 MB).
const maxBatch = 1 << 16
