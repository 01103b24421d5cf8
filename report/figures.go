package report

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"

	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/run"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

type plotFunc func() (*plot.Plot, int, error)

// figures adds every plot the run's files allow, in reading order.
func (r *source) figures(rep *Report, opts Options) {
	m := r.metrics
	epoch := m.Col("epoch")
	s := func(name, col string) series { return series{name: name, x: epoch, y: m.Col(col)} }
	rep.add("loss", "Loss per epoch", "Training loss (the task's cross-entropy, averaged over the epoch) and validation loss; the distillation and penalty terms where the recipe has them.",
		func() (*plot.Plot, int, error) {
			ss := []series{s("train", "train_loss"), s("validation", "val_loss")}
			for _, c := range []string{"distill_loss", "extra_loss"} {
				if slices.ContainsFunc(m.Col(c), func(v float64) bool { return v != 0 && finite(v) }) {
					ss = append(ss, s(strings.TrimSuffix(c, "_loss")+" term", c))
				}
			}
			return linePlot("Loss", "epoch", "loss", ss)
		})
	rep.add("accuracy", "Accuracy per epoch", "Training accuracy (over the epoch's batches, as trained) and validation accuracy at each epoch's end.",
		func() (*plot.Plot, int, error) {
			return linePlot("Accuracy", "epoch", "accuracy", []series{s("train", "train_accuracy"), s("validation", "val_accuracy")})
		})
	rep.add("teacher", "Teacher and student", "Validation accuracy of the distillation teacher(s) the run trained and of the student, per epoch; dashed: test accuracies.",
		r.teacherPlot)
	plan, err := r.plan()
	if err != nil && r.metrics != nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("schedules not drawn: %v", err))
	}
	rep.add("sparsity", "Sparsity per layer", "Each layer's fraction of zero weights at each epoch's end (thick: all weights); dashed: each prune block's scheduled target.",
		func() (*plot.Plot, int, error) { return r.sparsityPlot(plan) })
	rep.add("bits", "Bit widths in force", "The weights' bit width at each epoch's end (0: float).",
		func() (*plot.Plot, int, error) {
			if !slices.ContainsFunc(m.Col("weight_bits"), func(v float64) bool { return v > 0 }) {
				return nil, 0, nil
			}
			b := s("weight bits", "weight_bits")
			b.steps, b.points = true, true
			return linePlot("Bit width", "epoch", "bits", []series{b})
		})
	rep.add("lr", "Learning rate", "The learning rate recorded at each epoch's end (points) and the recipe's schedule (line).",
		func() (*plot.Plot, int, error) {
			lr := s("recorded", "lr")
			lr.points = true
			ss := []series{lr}
			if plan != nil {
				ss = append(ss, scheduleSeries("schedule", plan, plan.LR.At))
			}
			return linePlot("Learning rate", "epoch", "learning rate", ss)
		})
	rep.add("sensitivity", "Sensitivity per layer", "Validation accuracy with each layer pruned alone to each sparsity (the sensitivity analysis); dashed: the unpruned baseline.",
		r.sensitivityPlot)
	rep.add("pareto-size", "Accuracy against size", "Each run of the sweep: test accuracy against the model file's size; the line joins the Pareto front.",
		func() (*plot.Plot, int, error) {
			return r.paretoPlot("model file (bytes)", func(row run.SweepRow) float64 { return float64(row.ModelBytes) })
		})
	if opts.Runtime && len(r.sweep) > 0 {
		lat := r.sweepLatencies(opts.Threads, rep)
		rep.add("pareto-latency", "Accuracy against latency", "Each run of the sweep: test accuracy against its model's batch-1 latency in lathe's runtime (p50); the line joins the Pareto front.",
			func() (*plot.Plot, int, error) {
				return r.paretoPlot("batch-1 latency (µs)", func(row run.SweepRow) float64 { return lat[row.RunDir] })
			})
	}
	rep.add("model-bytes", "Model file by tensor", "Stored bytes of each tensor of model.arrow, after encoding (the table below gives each encoding).",
		r.bytesPlot)
	rep.add("kernel-latency", "Runtime latency by layer", "Time of the kernel lathe's runtime chose for each layer, timed at load, per batch size.",
		r.latencyPlot)
}

// plan rebuilds the run's plan from its resolved recipe.
func (r *source) plan() (*run.Plan, error) {
	if r.metrics == nil {
		return nil, nil
	}
	job, err := recipes.Load(filepath.Join(r.dir, rundir.RecipeFile), nil)
	if err != nil {
		return nil, err
	}
	info, err := data.Describe(job.Dataset, job.DataDir, job.Files())
	if err != nil {
		return nil, err
	}
	return run.Build(job, info, nil)
}

// scheduleSeries samples a schedule of samples seen over the run's epochs.
func scheduleSeries(name string, p *run.Plan, at func(int64) float64) series {
	out := series{name: name, dashed: true}
	const n = 400
	total := float64(p.Job.Epochs)
	for i := range n + 1 {
		e := total * float64(i) / n
		out.x = append(out.x, e)
		out.y = append(out.y, at(int64(e*float64(p.EpochSamples))))
	}
	return out
}

func (r *source) sparsityPlot(plan *run.Plan) (*plot.Plot, int, error) {
	m := r.metrics
	if m == nil {
		return nil, 0, nil
	}
	var layers []string
	for _, h := range m.Header {
		if l, ok := strings.CutPrefix(h, "sparsity_"); ok {
			layers = append(layers, l)
		}
	}
	var ss []series
	for i, l := range layers {
		ss = append(ss, series{name: l, x: m.Col("epoch"), y: m.Col("sparsity_" + l), color: palette(i, len(layers))})
	}
	if len(layers) > 12 {
		for i := range ss {
			ss[i].name = "" // a legend of every layer would hide the plot; colours run red to magenta in layer order
		}
	}
	ss = append(ss, series{name: "all weights", x: m.Col("epoch"), y: m.Col("sparsity"), color: black})
	if plan != nil {
		for _, pol := range plan.Prune {
			if pp, ok := pol.(*trainer.PrunePolicy); ok && pp.Schedule.Final > 0 {
				t := scheduleSeries("target "+pp.Label, plan, pp.Schedule.Target)
				t.color = gray
				ss = append(ss, t)
			}
		}
	}
	if !slices.ContainsFunc(m.Col("sparsity"), func(v float64) bool { return v > 0 }) && len(ss) == len(layers)+1 {
		return nil, 0, nil // a dense run without pruning
	}
	return linePlot("Sparsity", "epoch", "fraction of zero weights", ss)
}

func (r *source) teacherPlot() (*plot.Plot, int, error) {
	var ss []series
	for i, d := range teacherDirs(r.dir) {
		t, err := ReadTable(filepath.Join(d, rundir.MetricsFile))
		if err != nil {
			return nil, 0, err
		}
		name := filepath.Base(d)
		ss = append(ss, series{name: name + " validation", x: t.Col("epoch"), y: t.Col("val_accuracy"), color: palette(i+1, 4)})
	}
	teacherTest := 0.0
	if r.summary != nil {
		teacherTest = r.summary.TeacherTestAccuracy
	}
	if len(ss) == 0 && teacherTest == 0 {
		return nil, 0, nil
	}
	epochs := r.metrics.Col("epoch")
	ss = append(ss, series{name: "student validation", x: epochs, y: r.metrics.Col("val_accuracy"), color: palette(0, 4)})
	if len(epochs) > 0 {
		span := []float64{1, max(epochs[len(epochs)-1], 1)}
		if teacherTest > 0 {
			ss = append(ss, series{name: "teacher test", x: span, y: []float64{teacherTest, teacherTest}, dashed: true, color: palette(1, 4)})
		}
		if r.summary != nil {
			ss = append(ss, series{name: "student test", x: span, y: []float64{r.summary.TestAccuracy, r.summary.TestAccuracy}, dashed: true, color: palette(0, 4)})
		}
	}
	return linePlot("Teacher and student", "epoch", "accuracy", ss)
}

func (r *source) sensitivityPlot() (*plot.Plot, int, error) {
	t := r.sens
	if t == nil || t.Rows == 0 {
		return nil, 0, nil
	}
	var order []string
	by := map[string]*series{}
	for i, l := range t.Text["layer"] {
		if by[l] == nil {
			order = append(order, l)
			by[l] = &series{name: l, points: true}
		}
		by[l].x = append(by[l].x, t.Cols["sparsity"][i])
		by[l].y = append(by[l].y, t.Cols["val_accuracy"][i])
	}
	var ss []series
	for i, l := range order {
		s := *by[l]
		s.color = palette(i, len(order))
		ss = append(ss, s)
	}
	if base := t.Cols["baseline_val_accuracy"]; len(base) > 0 {
		lo, hi := slices.Min(t.Cols["sparsity"]), slices.Max(t.Cols["sparsity"])
		ss = append(ss, series{name: "baseline", x: []float64{lo, hi}, y: []float64{base[0], base[0]}, dashed: true, color: black})
	}
	return linePlot("Sensitivity", "sparsity of the layer alone", "validation accuracy", ss)
}

// paretoPlot draws the sweep's points against cost, labelled with their
// variables, and joins the front (no other point both cheaper and more
// accurate).
func (r *source) paretoPlot(xlabel string, cost func(run.SweepRow) float64) (*plot.Plot, int, error) {
	var pts plotter.XYs
	var labels []string
	for _, row := range r.sweep {
		if row.Error != "" || !finite(cost(row)) || cost(row) <= 0 {
			continue
		}
		pts = append(pts, plotter.XY{X: cost(row), Y: row.TestAccuracy})
		var kv []string
		for _, k := range sortedKeys(row.Vars) {
			kv = append(kv, k+"="+row.Vars[k])
		}
		labels = append(labels, strings.Join(kv, " "))
	}
	if len(pts) == 0 {
		return nil, 0, nil
	}
	front := series{name: "Pareto front", color: gray}
	idx := make([]int, len(pts))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmpFloat(pts[a].X, pts[b].X) })
	best := math.Inf(-1)
	for _, i := range idx {
		if pts[i].Y > best {
			best = pts[i].Y
			front.x, front.y = append(front.x, pts[i].X), append(front.y, pts[i].Y)
		}
	}
	xs, ys := make([]float64, len(pts)), make([]float64, len(pts))
	for i, p := range pts {
		xs[i], ys[i] = p.X, p.Y
	}
	p, n, err := linePlot("Accuracy against "+strings.Fields(xlabel)[0], xlabel, "test accuracy",
		[]series{front, {name: "runs", x: xs, y: ys, points: true, color: palette(0, 1)}})
	if err != nil || p == nil {
		return p, n, err
	}
	return p, n, labelled(p, pts, labels)
}

func (r *source) bytesPlot() (*plot.Plot, int, error) {
	if r.model == nil {
		return nil, 0, nil
	}
	var names []string
	var bytes []float64
	for _, t := range r.model.Tensors {
		names = append(names, t.Name)
		bytes = append(bytes, float64(t.Bytes))
	}
	return barPlot("Model file by tensor", "stored bytes", names, nil, [][]float64{bytes})
}

func (r *source) latencyPlot() (*plot.Plot, int, error) {
	if len(r.layers) == 0 {
		return nil, 0, nil
	}
	var names, groups []string
	var vals [][]float64
	for pi, probe := range r.layers[0].probes {
		if probe != 1 && probe != 64 {
			continue
		}
		groups = append(groups, fmt.Sprintf("batch %d", probe))
		var v []float64
		for _, l := range r.layers {
			v = append(v, max(0, l.us[pi])) // (untimed: none shown)
		}
		vals = append(vals, v)
	}
	for _, l := range r.layers {
		names = append(names, l.name)
	}
	return barPlot("Runtime latency by layer", "µs per call (chosen kernel)", names, groups, vals)
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
