// Package report shows a run directory: Write makes one self-contained
// HTML page of plots and tables from the files a run leaves (lathe report),
// and Server serves a live page and Prometheus metrics while a job runs
// (coordinator --http). Both read the run directory only — a finished,
// failed, killed or still-running run renders whatever it has written.
package report

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gonum.org/v1/plot/vg"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/run"
	"github.com/lathe-ml/lathe/rundir"
)

// Options are Write's settings.
type Options struct {
	// Out is the HTML file (default <dir>/report.html); each plot is
	// also written beside it as <name>-<plot>.png.
	Out string
	// Runtime loads the model file in lathe's runtime to time its kernels
	// (per-layer latencies; a sweep's accuracy-latency plot).
	Runtime bool
	Threads int // the runtime's threads (0: every core)
}

// Report is what Write made.
type Report struct {
	Dir, Out string
	Job      string
	State    string // training, done, failed, interrupted; "" when unknown
	Figures  []Figure
	// Notes say what the report could not show and why.
	Notes []string
	Bytes int // size of the HTML file
}

// Figure returns the figure named name, or nil.
func (r *Report) Figure(name string) *Figure {
	for i := range r.Figures {
		if r.Figures[i].Name == name {
			return &r.Figures[i]
		}
	}
	return nil
}

// source is everything read from a run directory.
type source struct {
	dir      string
	status   rundir.Status
	manifest rundir.Manifest
	summary  *rundir.Summary
	metrics  *Table
	sens     *Table
	sweep    []run.SweepRow
	model    *checkpoint.Inspection
	hasStat  bool
	layers   []layerTiming   // the runtime's kernels (Options.Runtime)
	latency  map[int]float64 // whole-model p50 µs by batch
}

// Write reads the run directory dir and writes its report.
func Write(dir string, opts Options) (*Report, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("report: %s is not a run directory", dir)
	}
	if opts.Out == "" {
		opts.Out = filepath.Join(dir, "report.html")
	}
	r := &source{dir: dir}
	rep := &Report{Dir: dir, Out: opts.Out}
	note := func(format string, args ...any) { rep.Notes = append(rep.Notes, fmt.Sprintf(format, args...)) }
	if r.hasStat, err = readJSON(filepath.Join(dir, rundir.StatusFile), &r.status); err != nil {
		note("%v", err)
	}
	if _, err := readJSON(filepath.Join(dir, rundir.ManifestFile), &r.manifest); err != nil {
		note("%v", err)
	}
	var sum rundir.Summary
	if ok, err := readJSON(filepath.Join(dir, rundir.SummaryFile), &sum); err != nil {
		note("%v", err)
	} else if ok {
		r.summary = &sum
	}
	if r.metrics, err = ReadTable(filepath.Join(dir, rundir.MetricsFile)); err != nil {
		note("%v", err)
	}
	if r.metrics != nil && r.metrics.Partial {
		note("metrics.csv ends mid-row (the run stopped while writing it); the rows before it are shown")
	}
	if r.sens, err = ReadTable(filepath.Join(dir, rundir.SensitivityCSV)); err != nil {
		note("%v", err)
	}
	if _, err := readJSON(filepath.Join(dir, run.SweepFile), &r.sweep); err != nil {
		note("%v", err)
	}
	if f, err := checkpoint.Read(filepath.Join(dir, rundir.ModelFile)); err == nil {
		in := checkpoint.Inspect(f, filepath.Join(dir, rundir.ModelFile))
		r.model = &in
		if opts.Runtime {
			if err := r.timeKernels(f, opts.Threads, rep); err != nil {
				note("runtime: %v", err)
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		note("model file: %v", err)
	} else if len(r.sweep) == 0 {
		note("no %s yet: the run has not finished", rundir.ModelFile)
	}
	rep.Job, rep.State = r.manifest.Job, r.status.State
	if rep.Job == "" {
		rep.Job = r.status.Job
	}
	if rep.State == "" && r.summary != nil {
		rep.State = "done"
	}
	r.figures(rep, opts)
	if err := r.writeHTML(rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// add renders a plot into the report, writing its PNG beside the HTML.
func (rep *Report) add(name, title, caption string, p plotFunc) {
	pl, n, err := p()
	if err != nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s: %v", title, err))
		return
	}
	if pl == nil {
		return
	}
	b, err := png(pl, 18*vg.Centimeter, 10*vg.Centimeter)
	if err != nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s: %v", title, err))
		return
	}
	stem := strings.TrimSuffix(rep.Out, filepath.Ext(rep.Out))
	file := stem + "-" + name + ".png"
	if err := checkpoint.WriteAtomic(file, b); err != nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s: %v", title, err))
		file = ""
	}
	rep.Figures = append(rep.Figures, Figure{Name: name, Title: title, Caption: caption, PNG: b, Points: n, File: file})
}

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"img": func(b []byte) template.URL {
		return template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(b))
	},
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lathe report: {{.Job}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:90%}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
figure{display:inline-block;margin:1em 1em 1em 0;vertical-align:top}
figcaption{font-size:85%;color:#555;max-width:680px}
img{max-width:680px;border:1px solid #ddd}
.note{color:#8a4b00}
</style></head><body>
<h1>lathe report: {{.Job}}</h1>
<p>Run directory <code>{{.Dir}}</code>{{if .State}}; state <b id="state">{{.State}}</b>{{end}}; made {{.Made}}.</p>
{{if .Facts}}<table>{{range .Facts}}<tr><th class="l">{{.K}}</th><td class="l">{{.V}}</td></tr>{{end}}</table>{{end}}
{{range .Notes}}<p class="note">{{.}}</p>{{end}}
{{range .Figures}}<figure id="fig-{{.Name}}"><img alt="{{.Title}}" src="{{img .PNG}}" data-points="{{.Points}}"><figcaption><b>{{.Title}}.</b> {{.Caption}}</figcaption></figure>
{{end}}
{{range .Tables}}<h2>{{.Title}}</h2><table id="{{.ID}}"><tr>{{range .Head}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range $i, $c := .}}<td{{if eq $i 0}} class="l"{{end}}>{{$c}}</td>{{end}}</tr>
{{end}}</table>
{{end}}</body></html>
`))

// fact is one line of the report's header table.
type fact struct{ K, V string }

// htmlTable is one table of the report.
type htmlTable struct {
	ID, Title string
	Head      []string
	Rows      [][]string
}

func (r *source) writeHTML(rep *Report) error {
	v := struct {
		*Report
		Made   string
		Facts  []fact
		Tables []htmlTable
	}{Report: rep, Made: time.Now().UTC().Format(time.RFC3339), Facts: r.facts(), Tables: r.tables()}
	var b bytes.Buffer
	if err := page.Execute(&b, v); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := checkpoint.WriteAtomic(rep.Out, b.Bytes()); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	rep.Bytes = b.Len()
	return nil
}
