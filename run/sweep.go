package run

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
)

// SweepFile and SweepCSV are a sweep's table in its run directory.
const (
	SweepFile = "sweep.json"
	SweepCSV  = "sweep.csv"
)

// SweepVar is one swept recipe variable: name=v1,v2,…
type SweepVar struct {
	Name   string
	Values []string
}

// ParseSweep reads a --sweep value, name=v1,v2,… (values are HCL
// expressions, as with -var).
func ParseSweep(s string) (SweepVar, error) {
	name, vals, ok := strings.Cut(s, "=")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.TrimSpace(vals) == "" {
		return SweepVar{}, fmt.Errorf("--sweep %q: want name=value1,value2,…", s)
	}
	var out []string
	for _, v := range strings.Split(vals, ",") {
		if v = strings.TrimSpace(v); v == "" {
			return SweepVar{}, fmt.Errorf("--sweep %q: an empty value", s)
		}
		out = append(out, v)
	}
	return SweepVar{Name: name, Values: out}, nil
}

// SweepRow is one point of a sweep.
type SweepRow struct {
	Vars          map[string]string `json:"vars"`
	RunDir        string            `json:"run_dir"`
	TestAccuracy  float64           `json:"test_accuracy"`
	ValAccuracy   float64           `json:"val_accuracy"`
	Sparsity      float64           `json:"sparsity"` // of all parameters
	ModelBytes    int               `json:"model_bytes"`
	ModelRatio    float64           `json:"model_ratio"`
	SamplesPerSec float64           `json:"samples_per_second"`
	WallSeconds   float64           `json:"wall_seconds"`
	// Worker is the cluster worker that ran the point (job-parallel
	// mode).
	Worker string `json:"worker,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Sweep runs the recipe at file once per combination of the swept
// variables' values (with vars, the -var settings, under them), each in
// its own run directory under dir/sweep/ — one after the other in this
// process, or, with opts.Cluster, as tasks for the cluster's workers,
// several at once — and writes dir/sweep.json and dir/sweep.csv: one row
// per run, failed runs included with their error. It returns the rows and
// the first failure.
func Sweep(ctx context.Context, file string, vars []string, sweep []SweepVar, dir string, opts Options) ([]SweepRow, error) {
	combos := [][]string{nil}
	for _, sv := range sweep {
		var next [][]string
		for _, c := range combos {
			for _, v := range sv.Values {
				next = append(next, append(slices.Clone(c), sv.Name+"="+v))
			}
		}
		combos = next
	}
	// Every combination must load and pass the plan's checks before
	// anything runs.
	jobs := make([]*recipes.Job, len(combos))
	for i, c := range combos {
		j, err := recipes.Load(file, append(slices.Clone(vars), c...))
		if err == nil {
			err = Check(j)
		}
		if err != nil {
			return nil, err
		}
		jobs[i] = j
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	rows := make([]SweepRow, len(combos))
	for i, c := range combos {
		name := strings.NewReplacer("/", "_", " ", "").Replace(strings.Join(c, ","))
		rows[i] = SweepRow{Vars: map[string]string{}, RunDir: filepath.Join(dir, "sweep", name)}
		for _, kv := range c {
			k, v, _ := strings.Cut(kv, "=")
			rows[i].Vars[k] = v
		}
	}
	var first error
	var finished []SweepRow // in the order the runs finish
	record := func(i int, sum *rundir.Summary, err error) error {
		row := &rows[i]
		if err != nil {
			row.Error = err.Error()
			if first == nil {
				first = fmt.Errorf("run: sweep %s: %w", strings.Join(combos[i], " "), err)
			}
		} else {
			row.TestAccuracy, row.ValAccuracy, row.ModelBytes, row.ModelRatio = sum.TestAccuracy, sum.ValAccuracy, sum.ModelBytes, sum.ModelRatio
			row.SamplesPerSec, row.WallSeconds = sum.SamplesPerSecond, sum.WallSeconds
			if sum.ParamsTotal > 0 {
				row.Sparsity = 1 - float64(sum.ParamsNonzero)/float64(sum.ParamsTotal)
			}
		}
		finished = append(finished, *row)
		if opts.Logger != nil {
			opts.Logger.Info("sweep run finished", "runs_done", len(finished), "of", len(combos), "vars", strings.Join(combos[i], " "),
				"test_accuracy", row.TestAccuracy, "error", row.Error)
		}
		return writeSweep(dir, sweep, finished)
	}
	if opts.Cluster != nil {
		// Job-parallel: each point is a task for a worker, several at once.
		if err := sweepOnCluster(ctx, jobs, rows, opts, record); err != nil {
			return finished, err
		}
		// The table in the sweep's own order.
		return rows, errors.Join(first, writeSweep(dir, sweep, rows))
	}
	for i, c := range combos {
		o := opts
		o.RunDir = rows[i].RunDir
		if o.Logger != nil {
			o.Logger.Info("sweep run", "run", i+1, "of", len(combos), "vars", strings.Join(c, " "), "run_dir", o.RunDir)
		}
		sum, err := Execute(ctx, jobs[i], o)
		if werr := record(i, sum, err); werr != nil {
			return finished, werr
		}
		if err != nil && ctx.Err() != nil {
			break
		}
	}
	return finished, first
}

func writeSweep(dir string, sweep []SweepVar, rows []SweepRow) error {
	if err := rundir.WriteJSON(filepath.Join(dir, SweepFile), rows); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	var b strings.Builder
	w := csv.NewWriter(&b)
	head := []string{}
	for _, sv := range sweep {
		head = append(head, sv.Name)
	}
	_ = w.Write(append(head, "test_accuracy", "val_accuracy", "sparsity", "model_bytes", "model_ratio", "samples_per_second", "wall_seconds", "worker", "error"))
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', 6, 64) }
	for _, r := range rows {
		rec := []string{}
		for _, sv := range sweep {
			rec = append(rec, r.Vars[sv.Name])
		}
		_ = w.Write(append(rec, f(r.TestAccuracy), f(r.ValAccuracy), f(r.Sparsity), strconv.Itoa(r.ModelBytes), f(r.ModelRatio),
			f(r.SamplesPerSec), f(r.WallSeconds), r.Worker, r.Error))
	}
	w.Flush()
	return checkpoint.WriteAtomic(filepath.Join(dir, SweepCSV), []byte(b.String()))
}
