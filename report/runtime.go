package report

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/rundir"
)

// layerTiming is one weighted layer's chosen kernel and its time at each
// of the runtime's probe batches.
type layerTiming struct {
	name    string
	probes  []int
	kernels []string
	us      []float64
}

// load reads a model file into lathe's runtime (which times its kernels).
func load(f *checkpoint.File, threads int) (*infer.Model, error) {
	return infer.Load(f, cpu.New(cpu.Options{Threads: threads, Logger: hclog.NewNullLogger(), Spin: infer.Spin}))
}

// timeKernels loads the model in the runtime: each layer's chosen kernels
// and their times, and the whole model's latency at batch 1 and 64.
func (r *source) timeKernels(f *checkpoint.File, threads int, rep *Report) error {
	m, err := load(f, threads)
	if err != nil {
		return err
	}
	for _, l := range m.Layers {
		if !l.Weighted() {
			continue
		}
		lt := layerTiming{name: l.Name, probes: infer.Probes, kernels: l.Kernels}
		for i, k := range l.Kernels {
			us := -1.0 // not timed: a grouped convolution has one kernel to run
			if t := l.Timing(k); t != nil {
				us = float64(t[i].Nanoseconds()) / 1e3
			}
			lt.us = append(lt.us, us)
		}
		r.layers = append(r.layers, lt)
	}
	r.latency = map[int]float64{}
	for _, b := range []int{1, 64} {
		r.latency[b] = p50(m, b, 150*time.Millisecond)
	}
	return nil
}

// p50 is the median time of a forward pass at batch, in µs, over about d.
func p50(m *infer.Model, batch int, d time.Duration) float64 {
	x := make([]float32, batch*m.Features)
	for i := range x {
		x[i] = float32(i%255) / 255
	}
	m.Forward(x, batch)
	var ts []float64
	start := time.Now()
	for len(ts) < 5 || (time.Since(start) < d && len(ts) < 10000) {
		t0 := time.Now()
		m.Forward(x, batch)
		ts = append(ts, float64(time.Since(t0).Nanoseconds())/1e3)
	}
	slices.Sort(ts)
	return ts[len(ts)/2]
}

// sweepLatencies times each sweep point's model at batch 1, by run
// directory.
func (r *source) sweepLatencies(threads int, rep *Report) map[string]float64 {
	out := map[string]float64{}
	for _, row := range r.sweep {
		if row.Error != "" {
			continue
		}
		path := filepath.Join(row.RunDir, rundir.ModelFile)
		if _, err := os.Stat(path); err != nil {
			// The sweep was run from another directory: its runs are under ours.
			path = filepath.Join(r.dir, "sweep", filepath.Base(row.RunDir), rundir.ModelFile)
		}
		f, err := checkpoint.Read(path)
		if err == nil {
			var m *infer.Model
			if m, err = load(f, threads); err == nil {
				out[row.RunDir] = p50(m, 1, 50*time.Millisecond)
				continue
			}
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf("sweep point %s: %v", row.RunDir, err))
	}
	return out
}

// facts are the header table: where the run stands and its results.
func (r *source) facts() []fact {
	var out []fact
	add := func(k, format string, args ...any) { out = append(out, fact{k, fmt.Sprintf(format, args...)}) }
	if st := r.status; r.hasStat {
		add("progress", "epoch %d of %d, step %d (%d samples seen), last loss %.4f, %.0f samples/s", st.Epoch, st.Epochs, st.Step, st.SamplesSeen, st.LastLoss, st.SamplesPerSecond)
		add("status updated", "%s", st.Updated.Format(time.RFC3339))
		if st.Error != "" {
			add("error", "%s", st.Error)
		}
		for _, w := range st.Workers {
			add("worker "+w.Name, "%s on %s, step %d, %.0f samples/s, share %d", w.State, w.Device, w.Step, w.SamplesPerSecond, w.Share)
		}
	}
	if mf := r.manifest; mf.Job != "" {
		add("build", "lathe %s, commit %s, %s on %s (%d CPUs)", mf.Lathe, short(mf.Commit), mf.GoVersion, mf.Host, mf.CPUs)
		add("engine", "%s", mf.Compute.Engine)
	}
	if s := r.summary; s != nil {
		add("test accuracy", "%.4f (validation %.4f)", s.TestAccuracy, s.ValAccuracy)
		if s.TeacherTestAccuracy > 0 {
			add("teacher test accuracy", "%.4f", s.TeacherTestAccuracy)
		}
		add("parameters", "%d, %d non-zero", s.ParamsTotal, s.ParamsNonzero)
		add("model file", "%d bytes, %.1f× smaller than the fp32 parameters (%d bytes)", s.ModelBytes, s.ModelRatio, s.DenseBytes)
		if s.DenseMACs > 0 {
			add("MACs per sample", "%d of %d dense (%.1f%%)", s.MACs, s.DenseMACs, 100*float64(s.MACs)/float64(s.DenseMACs))
		}
		add("training", "%d epochs, %.0f samples/s, %.1f s", s.Epochs, s.SamplesPerSecond, s.WallSeconds)
	}
	for _, b := range []int{1, 64} {
		if v, ok := r.latency[b]; ok {
			add(fmt.Sprintf("latency, batch %d", b), "%.1f µs (p50, lathe's runtime)", v)
		}
	}
	return out
}

func short(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// tables are the model file's encodings and the runtime's kernels.
func (r *source) tables() []htmlTable {
	var out []htmlTable
	if r.model != nil {
		t := htmlTable{ID: "encodings", Title: fmt.Sprintf("Model file: %d bytes, %.1f× smaller than fp32", r.model.FileBytes, r.model.Ratio),
			Head: []string{"tensor", "role", "shape", "encoding", "index", "values", "sparsity", "bits", "bytes"}}
		for _, ti := range r.model.Tensors {
			t.Rows = append(t.Rows, []string{ti.Name, ti.Role, fmt.Sprint(ti.Shape), ti.Encoding, ti.IndexFormat, ti.ValueFormat,
				strconv.FormatFloat(ti.Sparsity, 'f', 4, 64), strconv.Itoa(ti.Bits), strconv.Itoa(ti.Bytes)})
		}
		out = append(out, t)
	}
	if len(r.layers) > 0 {
		t := htmlTable{ID: "kernels", Title: "Runtime kernels (chosen at load; µs per call)", Head: []string{"layer"}}
		for _, p := range r.layers[0].probes {
			t.Head = append(t.Head, fmt.Sprintf("batch %d", p))
		}
		for _, l := range r.layers {
			row := []string{l.name}
			for i := range l.probes {
				cell := l.kernels[i]
				if l.us[i] >= 0 {
					cell += fmt.Sprintf(" %.1f", l.us[i])
				}
				row = append(row, cell)
			}
			t.Rows = append(t.Rows, row)
		}
		out = append(out, t)
	}
	if len(r.sweep) > 0 {
		t := htmlTable{ID: "sweep", Title: "Sweep", Head: []string{"variables", "test accuracy", "sparsity", "model bytes", "ratio", "error"}}
		for _, row := range r.sweep {
			var kv string
			for _, k := range sortedKeys(row.Vars) {
				kv += k + "=" + row.Vars[k] + " "
			}
			t.Rows = append(t.Rows, []string{kv, fmt.Sprintf("%.4f", row.TestAccuracy), fmt.Sprintf("%.3f", row.Sparsity),
				strconv.Itoa(row.ModelBytes), fmt.Sprintf("%.1f", row.ModelRatio), row.Error})
		}
		out = append(out, t)
	}
	return out
}
