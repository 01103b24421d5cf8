package run

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/distill"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/schedule"
	"github.com/lathe-ml/lathe/trainer"
)

// Plan is a recipe made into the typed values a run takes, in one place:
// the student model, the epoch's size, the learning-rate schedule, the
// optimizer's settings and every policy of the recipe's blocks, each
// built and checked against the model with errors at the recipe's
// file:line:column. A run, a dry run and each teacher's run start from
// one.
type Plan struct {
	Job           *recipes.Job
	Model         *model.Model // the student as the seed initializes it
	StepsPerEpoch int
	EpochSamples  int64 // samples an epoch consumes (whole batches)
	LR            schedule.LR
	Optimizer     trainer.OptimConfig // without its engine
	Prune         []trainer.Policy    // one *trainer.PrunePolicy per prune block
	Regularize    []trainer.Policy    // one *trainer.RegularizePolicy per regularize block
	KMeans        *trainer.KMeansPolicy
	Quantize      *trainer.QuantPolicy
	Factorize     []trainer.FactorizeAt
	KD            *distill.Config // the distill block's loss (nil: none)
	// Fields names the recipe block each policy was built from.
	Fields policyFields
}

// Build makes job's plan for its dataset (data.Describe's, or that of
// the set loaded): the training split is what validation leaves.
func Build(job *recipes.Job, info data.Info, log hclog.Logger) (*Plan, error) {
	if err := Check(job); err != nil {
		return nil, err
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	trainLen := info.Train - job.Validation
	if trainLen < 1 {
		return nil, job.Errorf("validation", "validation %d leaves none of the %d training samples of %s", job.Validation, info.Train, job.Dataset)
	}
	if job.Batch > trainLen {
		return nil, job.Errorf("batch", "batch %d exceeds the %d training samples", job.Batch, trainLen)
	}
	m, err := newModel(job, info)
	if err != nil {
		return nil, err
	}
	if err := checkMemory(job, m); err != nil {
		return nil, err
	}
	if m.Spec.Arch == "" {
		switch { // (a rebuild restarts from a preset's spec)
		case job.ThinAtEpoch > 0:
			return nil, job.Errorf("thin.at_epoch", "a thin block rebuilds preset models only; a graph model's zero channels (dependency-group pruning) are thinned away when the run ends")
		case len(job.Factorize) > 0:
			return nil, job.Errorf("factorize.0.layer", "low-rank factorization rebuilds preset models only")
		}
	}
	if err := m.Net.Basic(); err != nil {
		// Mid-run rebuilds restart from a preset's spec, which a chain has.
		switch {
		case job.ThinAtEpoch > 0:
			return nil, job.Errorf("thin.at_epoch", "a thin block rebuilds chains of layers only so far (%v); dependency-group pruning's zero channels are thinned away when the run ends", err)
		case len(job.Factorize) > 0:
			return nil, job.Errorf("factorize.0.layer", "low-rank factorization rebuilds chains of layers only so far (%v)", err)
		}
	}
	p := &Plan{Job: job, Model: m, StepsPerEpoch: data.Steps(trainLen, job.Batch), Fields: policyFields{}}
	p.EpochSamples = int64(p.StepsPerEpoch * job.Batch)
	o := job.Optimizer
	p.LR = schedule.LR{Kind: o.Schedule, Base: o.LR, Min: o.MinLR, Warmup: int64(o.WarmupEpochs * float64(p.EpochSamples)),
		Total: p.EpochSamples * int64(job.Epochs), Every: int64(o.StepEpochs * float64(p.EpochSamples)), Gamma: o.Gamma}
	if err := p.LR.Validate(); err != nil {
		return nil, job.Errorf("optimizer.lr_schedule", "%v", err)
	}
	p.Optimizer = trainer.OptimConfig{Kind: o.Kind, Momentum: o.Momentum, Nesterov: o.Nesterov,
		WeightDecay: o.WeightDecay, Beta1: o.Beta1, Beta2: o.Beta2, Eps: o.Eps}
	if p.Prune, err = prunePolicies(job, m, p.EpochSamples, log); err != nil {
		return nil, err
	}
	if p.Regularize, err = regularizePolicies(job, m, p.EpochSamples); err != nil {
		return nil, err
	}
	if p.Factorize, err = factorizations(job, m); err != nil {
		return nil, err
	}
	if p.KMeans, err = kmeansPolicy(job, m, p.EpochSamples, log); err != nil {
		return nil, err
	}
	if p.Quantize, err = quantizePolicy(job, m, p.EpochSamples, log); err != nil {
		return nil, err
	}
	if p.KMeans != nil && p.Quantize != nil && slices.ContainsFunc(p.KMeans.Layers, func(l string) bool { return m.Quant[l] != nil }) {
		// (the recipe's own check compares names; patterns meet here)
		return nil, job.Errorf("cluster", "a layer is both clustered and quantized; choose one way of sharing its values")
	}
	if d := job.Distill; d != nil {
		p.KD = &distill.Config{Temperature: d.Temperature, Alpha: d.Alpha}
		if q := job.Quantize; q != nil && d.Temperature >= 4 && (q.Bits <= 4 || slices.ContainsFunc(q.Gradual, func(b int) bool { return b <= 4 })) {
			log.Warn("a high distillation temperature with weights of 4 bits or fewer has been seen to cost accuracy (Distiller: 91.44 % → 80.94 % at T = 5 with 3-bit weights); consider T ≤ 2",
				"temperature", d.Temperature, "where", job.Pos("distill"))
		}
	}
	p.Fields.add("prune", p.Prune)
	p.Fields.add("regularize", p.Regularize)
	if p.KMeans != nil {
		p.Fields[p.KMeans] = "cluster"
	}
	if p.Quantize != nil {
		p.Fields[p.Quantize] = "quantize"
	}
	return p, nil
}

// specOf is a recipe's model block as an architecture.
// describe is job's dataset's Info, an error naming the recipe's dataset.
func describe(job *recipes.Job) (data.Info, error) {
	info, err := data.Describe(job.Dataset, job.DataDir, job.Files())
	if err != nil {
		return info, job.Errorf("dataset", "%v", err)
	}
	return info, nil
}

// inputOf is the model input a dataset gives: its samples' shape and
// classes.
func inputOf(info data.Info) model.Input {
	return model.Input{Rows: info.Rows, Cols: info.Cols, Channels: max(info.Channels, 1), Classes: info.Classes, PerPosition: info.Positions > 0}
}

func specOf(m recipes.Model) model.Spec {
	return model.Spec{Arch: m.Arch, Hidden: m.Hidden, Dropout: m.Dropout, InputDropout: m.InputDropout, Init: m.Init, Depth: m.Depth, Width: m.Width,
		Dim: m.Dim, Heads: m.Heads, Blocks: m.Blocks, MLP: m.MLP, SkipPadding: m.SkipPadding, Ngram: m.Ngram}
}

// Policies are the plan's policies in the order they run: the learning
// rate, pruning, regularization, k-means, quantization, then sens (a
// sensitivity analysis, built once the validation split is loaded) when
// not nil.
func (p *Plan) Policies(sens *trainer.SensitivityPolicy) []trainer.Policy {
	out := []trainer.Policy{&trainer.LRPolicy{Schedule: p.LR}}
	out = append(out, p.Prune...)
	out = append(out, p.Regularize...)
	if p.KMeans != nil {
		out = append(out, p.KMeans)
	}
	if p.Quantize != nil {
		out = append(out, p.Quantize)
	}
	if sens != nil {
		p.Fields[sens] = "sensitivity"
		out = append(out, sens)
	}
	return out
}

// DryRun checks a job as a run would (layer names, granularities, ranks,
// windows) without reading data or training, and prints what happens when:
// per epoch, the learning rate at its start, each prune block's target
// sparsity at its end (marked "guarded" where an accuracy guard may pause
// it), each regularizer's strength, and the one-off events (sensitivity,
// factorize, thin).
func DryRun(w io.Writer, job *recipes.Job) error {
	if err := Check(job); err != nil { // names first, then the data
		return err
	}
	info, err := describe(job)
	if err != nil {
		return err
	}
	plain := *job // the plan of the file as it is: post_training changes weights, not the network
	plain.PostTraining = nil
	p, err := Build(&plain, info, nil)
	if err != nil {
		return err
	}
	prune, regs, lr, epochSamples := p.Prune, p.Regularize, p.LR, p.EpochSamples
	if t := job.Target; t != nil {
		var budget []string
		switch {
		case t.LatencyUs > 0:
			budget = append(budget, fmt.Sprintf("%g µs", t.LatencyUs))
		case t.LatencyFraction > 0:
			budget = append(budget, fmt.Sprintf("%g × the dense model's latency", t.LatencyFraction))
		}
		if t.ModelBytes > 0 {
			budget = append(budget, fmt.Sprintf("a model file of %d bytes", t.ModelBytes))
		}
		dense, prof := "trained first in <run-dir>/dense", "measured here"
		if job.Model.File != "" {
			dense = job.Model.File
		}
		if t.Profile != "" {
			prof = t.Profile
		}
		fmt.Fprintf(w, "target search: %s (latency at batch %d on %d threads), at most %g of validation accuracy lost; up to %d rounds, each fine-tuning as below\n"+
			"  dense model: %s; profile: %s (docs/target.md)\n", strings.Join(budget, " and "), t.Batch, t.Threads, t.MaxAccuracyDrop, t.Rounds, dense, prof)
	}
	fmt.Fprintf(w, "job %s: %s on %s, %d epochs of %d steps (batch %d), %s\n", job.Name, modelName(job), job.Dataset,
		job.Epochs, epochSamples/int64(job.Batch), job.Batch, job.File)
	var names []string
	for _, pol := range p.Policies(nil) {
		names = append(names, pol.Name())
	}
	oc := p.Optimizer
	fmt.Fprintf(w, "model: %d parameters in %d layers; optimizer %s (momentum %g, weight decay %g); policies: %s\n",
		p.Model.NumParams(), len(p.Model.Net.Layers), oc.Kind, oc.Momentum, oc.WeightDecay, strings.Join(names, ", "))
	if pt := job.PostTraining; pt != nil {
		fmt.Fprintf(w, "post_training: %s compressed before the run on %d calibration samples (%s; not run here)\n", job.Model.File, pt.Samples, postSummary(pt))
	}
	if q := p.Quantize; q != nil {
		fmt.Fprintf(w, "quantize: %d weights; %d batch norms folded into their convolutions; %d activations quantized\n",
			len(q.Layers), len(p.Model.Fold), len(q.Observers))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := []string{"epoch", "lr"}
	for i, pb := range job.Prune {
		h := fmt.Sprintf("prune.%d %s %s", i, pb.Method, strings.Join(pb.Layers, ","))
		if pb.GuardTolerance > 0 {
			h += " (guarded)"
		}
		head = append(head, h)
	}
	for i, rb := range job.Regularize {
		head = append(head, fmt.Sprintf("regularize.%d %s", i, rb.Kind))
	}
	if job.Quantize != nil {
		head = append(head, "weight bits")
	}
	head = append(head, "events")
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for e := 1; e <= job.Epochs; e++ {
		start, end := int64(e-1)*epochSamples, int64(e)*epochSamples
		row := []string{fmt.Sprint(e), fmt.Sprintf("%.4g", lr.At(start))}
		for i, p := range prune {
			pp := p.(*trainer.PrunePolicy)
			row = append(row, pruneCell(job.Prune[i], pp.Schedule, end))
		}
		for _, r := range regs {
			rp := r.(*trainer.RegularizePolicy)
			if start+epochSamples <= rp.Start || (rp.End > 0 && start >= rp.End) {
				row = append(row, "-")
			} else {
				row = append(row, fmt.Sprintf("λ %.3g", rp.Strength))
			}
		}
		if q := job.Quantize; q != nil {
			bits := 0
			if float64(e) > q.FromEpoch {
				bits = q.Bits
			}
			for k, ge := range q.GradualEpochs {
				if float64(e) > ge {
					bits = q.Gradual[k]
				}
			}
			if bits == 0 {
				row = append(row, "float")
			} else {
				row = append(row, fmt.Sprint(bits))
			}
		}
		var events []string
		if job.Teacher != nil && e == 1 {
			if job.Teacher.File != "" {
				events = append(events, "(teacher: "+job.Teacher.File+")")
			} else {
				events = append(events, fmt.Sprintf("(before: %d× teacher %s, %d epochs)", job.Teacher.Count, job.Teacher.Model.Arch, job.Teacher.Epochs))
			}
		}
		if s := job.Sensitivity; s != nil && s.AtEpoch == e {
			events = append(events, "sensitivity (validation split) → per-layer targets")
		}
		for _, f := range job.Factorize {
			if f.AtEpoch == e-1 {
				if f.Rank > 0 {
					events = append(events, fmt.Sprintf("factorize %s rank %d", f.Layer, f.Rank))
				} else {
					events = append(events, fmt.Sprintf("factorize %s energy %g", f.Layer, f.Energy))
				}
			}
		}
		if job.ThinAtEpoch == e-1 && job.ThinAtEpoch > 0 {
			events = append(events, "thin")
		}
		if q := job.Quantize; q != nil {
			within := func(at float64) bool { return at > 0 && at >= float64(e-1) && at < float64(e) }
			if within(q.FreezeObserversEpoch) && q.Activations > 0 {
				events = append(events, fmt.Sprintf("activation ranges frozen at %g", q.FreezeObserversEpoch))
			}
			if within(q.FreezeBNEpoch) {
				events = append(events, fmt.Sprintf("batch norm statistics frozen at %g", q.FreezeBNEpoch))
			}
		}
		if cl := job.KMeans; cl != nil && cl.FromEpoch >= float64(e-1) && cl.FromEpoch < float64(e) {
			events = append(events, fmt.Sprintf("cluster %s into %d shared values", strings.Join(cl.Layers, ","), cl.Clusters))
		}
		row = append(row, strings.Join(events, "; "))
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// postSummary says what a post_training block does.
func postSummary(p *recipes.PostTraining) string {
	var parts []string
	if p.Bits > 0 {
		w := fmt.Sprintf("%d-bit weights", p.Bits)
		if p.GPTQ {
			w += " by GPTQ"
		}
		parts = append(parts, w)
	}
	if p.Activations > 0 {
		parts = append(parts, fmt.Sprintf("%d-bit activations (%s)", p.Activations, cmp.Or(p.Range, "minmax")))
	}
	if p.Prune != "" {
		s := fmt.Sprintf("%g", p.Sparsity)
		if len(p.NM) == 2 {
			s = fmt.Sprintf("%d:%d", p.NM[0], p.NM[1])
		}
		parts = append(parts, fmt.Sprintf("%s pruning to %s", p.Prune, s))
	}
	if p.BiasCorrection {
		parts = append(parts, "bias correction")
	}
	return strings.Join(parts, ", ")
}

// pruneCell is the target a prune block has reached by sample end.
func pruneCell(pb recipes.Prune, s schedule.Sparsity, end int64) string {
	last, ok := s.EventIn(0, end)
	if !ok {
		return "-"
	}
	switch {
	case pb.Method == "nm":
		return fmt.Sprintf("%d:%d", pb.N, pb.M)
	case pb.TargetsFrom == "sensitivity":
		return fmt.Sprintf("%.1f%% of suggested", 100*s.Target(last)/s.Final)
	}
	return fmt.Sprintf("%.2f%%", 100*s.Target(last))
}

// runBytes estimates the memory a run of job on m takes: per parameter
// the weight, its gradient, the optimizer's state, a mask and a spare copy
// (float32 each, Adam's two moments counted), and per sample of a batch
// the activations of every layer kept for the backward pass, twice over
// (values and gradients), for the student and a teacher as large.
func runBytes(job *recipes.Job, m *model.Model) int64 {
	perParam := int64(5)
	if job.Optimizer.Kind == "adam" || job.Optimizer.Kind == "adamw" {
		perParam++
	}
	var acts int64 // a convolution's outputs counted at the input's full size: a bound
	for _, w := range m.Weights() {
		out := int64(w.Shape[0])
		if len(w.Shape) == 4 {
			out *= int64(m.Input.Rows * m.Input.Cols)
		}
		acts += out
	}
	total := 4 * (perParam*int64(m.NumParams()) + 2*int64(job.Batch)*acts)
	if job.Teacher != nil {
		total *= 2
	}
	return total
}

// memoryBytes is this machine's memory (0: unknown); a variable for tests.
var memoryBytes = func() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// checkMemory refuses a run whose estimated memory exceeds the machine's,
// before anything of its size is allocated.
func checkMemory(job *recipes.Job, m *model.Model) error {
	need, have := runBytes(job, m), memoryBytes()
	if have > 0 && need > have {
		return job.Errorf("model.hidden", "the run needs about %.1f GiB (%d parameters, batch %d), and this machine has %.1f GiB",
			float64(need)/(1<<30), m.NumParams(), job.Batch, float64(have)/(1<<30))
	}
	return nil
}

// Check holds a decoded recipe against what lathe knows — the dataset,
// architectures (and that each builds), optimizer and learning-rate
// schedule — each refusal pointing at the recipe's file:line:column.
// recipes/ decodes these as names only; every run, dry run and sweep
// checks them here first.
func Check(job *recipes.Job) error {
	oneOf := func(field, what, got string, allowed []string) error {
		if slices.Contains(allowed, got) {
			return nil
		}
		return job.Errorf(field, "unknown %s; %s = %q; allowed: %s", what, field, got, strings.Join(allowed, ", "))
	}
	arch := func(prefix string, m recipes.Model) error {
		if err := oneOf(prefix+"arch", "value", m.Arch, model.Archs); err != nil {
			return err
		}
		if err := specOf(m).Canonical().Validate(); err != nil {
			return job.Errorf(prefix+"arch", "invalid model; %v", err)
		}
		return nil
	}
	if err := oneOf("dataset", "value", job.Dataset, data.Datasets); err != nil {
		return err
	}
	if data.IsText(job.Dataset) && (job.Augment.Shift > 0 || job.Augment.Flip) {
		return job.Errorf("augment", "augment shifts and flips images; dataset %s is text", job.Dataset)
	}
	if job.Augment.Truncate > 0 && (!data.IsText(job.Dataset) || data.OwnValidation(job.Dataset, job.DataDir)) {
		return job.Errorf("augment", "augment.truncate cuts the windows of a text classifier (langid, a text folder); dataset %s is not one (a language model's every byte is labelled)", job.Dataset)
	}
	if job.PostTraining != nil && (job.Model.File == "" || job.Target != nil) {
		return job.Errorf("post_training", "post_training compresses the model file a model block names (model.file), and not in a target search")
	}
	if data.IsFiles(job.Dataset) && job.Dataset != "images" && (job.Augment.Shift > 0 || job.Augment.Flip) {
		return job.Errorf("augment", "augment shifts and flips images; dataset %s holds a table or arrays (an image folder's samples are shifted)", job.Dataset)
	}
	if err := oneOf("optimizer.kind", "optimizer", job.Optimizer.Kind, trainer.OptimizerKinds); err != nil {
		return err
	}
	if err := oneOf("optimizer.lr_schedule", "value", job.Optimizer.Schedule, schedule.LRKinds); err != nil {
		return err
	}
	switch {
	case job.Model.File != "": // the file: read when the model is built
	case job.Model.Arch == "graph": // layer blocks
		info, err := describe(job)
		if err != nil {
			return err
		}
		if _, err := graphNetwork(job, info); err != nil {
			return err
		}
	default:
		if err := arch("model.", job.Model); err != nil {
			return err
		}
	}
	if t := job.Teacher; t != nil && t.File == "" {
		return arch("teacher.", t.Model)
	}
	return nil
}
