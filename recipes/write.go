package recipes

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
)

func stringList(ss []string) cty.Value {
	vs := make([]cty.Value, len(ss))
	for i, s := range ss {
		vs[i] = cty.StringVal(s)
	}
	return cty.ListVal(vs)
}

// writeModel writes a model block's attributes.
func writeModel(b *hclwrite.Body, m Model) {
	b.SetAttributeValue("arch", cty.StringVal(m.Arch))
	if len(m.Hidden) > 0 {
		var hs []cty.Value
		for _, h := range m.Hidden {
			hs = append(hs, cty.NumberIntVal(int64(h)))
		}
		b.SetAttributeValue("hidden", cty.ListVal(hs))
	}
	b.SetAttributeValue("dropout", cty.NumberFloatVal(m.Dropout))
	b.SetAttributeValue("input_dropout", cty.NumberFloatVal(m.InputDropout))
	b.SetAttributeValue("init", cty.StringVal(m.Init))
}

// HCL renders the resolved job — variables applied, every default filled —
// as a recipe that Load reads back to an equal Job.
func (j *Job) HCL() []byte {
	f := hclwrite.NewEmptyFile()
	root := f.Body()
	if len(j.Variables) > 0 {
		var names []string
		for k := range j.Variables {
			names = append(names, k)
		}
		sort.Strings(names)
		root.AppendUnstructuredTokens(hclwrite.Tokens{{Type: 0, Bytes: []byte("# resolved variables (already applied below):\n")}})
		for _, k := range names {
			root.AppendUnstructuredTokens(hclwrite.Tokens{{Bytes: []byte("#   " + k + " = " + j.Variables[k] + "\n")}})
		}
	}
	jb := root.AppendNewBlock("job", []string{j.Name}).Body()
	jb.SetAttributeValue("dataset", cty.StringVal(j.Dataset))
	jb.SetAttributeValue("seed", cty.NumberUIntVal(j.Seed))
	jb.SetAttributeValue("epochs", cty.NumberIntVal(int64(j.Epochs)))
	jb.SetAttributeValue("batch", cty.NumberIntVal(int64(j.Batch)))
	jb.SetAttributeValue("eval_batch", cty.NumberIntVal(int64(j.EvalBatch)))
	jb.SetAttributeValue("validation", cty.NumberIntVal(int64(j.Validation)))
	jb.SetAttributeValue("threads", cty.NumberIntVal(int64(j.Threads)))

	ab := jb.AppendNewBlock("augment", nil).Body()
	ab.SetAttributeValue("shift", cty.NumberIntVal(int64(j.Augment.Shift)))

	writeModel(jb.AppendNewBlock("model", nil).Body(), j.Model)

	cb := jb.AppendNewBlock("checkpoint", nil).Body()
	cb.SetAttributeValue("every_epochs", cty.NumberIntVal(int64(j.Checkpoint.EveryEpochs)))
	cb.SetAttributeValue("every_steps", cty.NumberIntVal(int64(j.Checkpoint.EverySteps)))
	cb.SetAttributeValue("keep", cty.NumberIntVal(int64(j.Checkpoint.Keep)))

	o := j.Optimizer
	ob := jb.AppendNewBlock("optimizer", []string{o.Kind}).Body()
	ob.SetAttributeValue("lr", cty.NumberFloatVal(o.LR))
	if o.Kind == "sgd" {
		ob.SetAttributeValue("momentum", cty.NumberFloatVal(o.Momentum))
		ob.SetAttributeValue("nesterov", cty.BoolVal(o.Nesterov))
	} else {
		ob.SetAttributeValue("beta1", cty.NumberFloatVal(o.Beta1))
		ob.SetAttributeValue("beta2", cty.NumberFloatVal(o.Beta2))
		ob.SetAttributeValue("eps", cty.NumberFloatVal(o.Eps))
	}
	ob.SetAttributeValue("weight_decay", cty.NumberFloatVal(o.WeightDecay))
	ob.SetAttributeValue("lr_schedule", cty.StringVal(o.Schedule))
	ob.SetAttributeValue("warmup_epochs", cty.NumberFloatVal(o.WarmupEpochs))
	ob.SetAttributeValue("min_lr", cty.NumberFloatVal(o.MinLR))
	ob.SetAttributeValue("step_epochs", cty.NumberFloatVal(o.StepEpochs))
	ob.SetAttributeValue("gamma", cty.NumberFloatVal(o.Gamma))
	for _, p := range j.Prune {
		pb := jb.AppendNewBlock("prune", []string{p.Method}).Body()
		pb.SetAttributeValue("layers", stringList(p.Layers))
		switch p.Method {
		case "magnitude":
			pb.SetAttributeValue("target", cty.NumberFloatVal(p.Target))
			pb.SetAttributeValue("scope", cty.StringVal(p.Scope))
		case "structured":
			pb.SetAttributeValue("target", cty.NumberFloatVal(p.Target))
			pb.SetAttributeValue("granularity", cty.StringVal(p.Granularity))
			pb.SetAttributeValue("norm", cty.StringVal(p.Norm))
		case "nm":
			pb.SetAttributeValue("n", cty.NumberIntVal(int64(p.N)))
			pb.SetAttributeValue("m", cty.NumberIntVal(int64(p.M)))
		}
		pb.SetAttributeValue("initial", cty.NumberFloatVal(p.Initial))
		pb.SetAttributeValue("schedule", cty.StringVal(p.Schedule))
		pb.SetAttributeValue("power", cty.NumberFloatVal(p.Power))
		pb.SetAttributeValue("from_epoch", cty.NumberFloatVal(p.FromEpoch))
		pb.SetAttributeValue("to_epoch", cty.NumberFloatVal(p.ToEpoch))
		if p.TargetsFrom != "" {
			pb.SetAttributeValue("targets_from", cty.StringVal(p.TargetsFrom))
		}
		if p.GuardTolerance > 0 {
			pb.SetAttributeValue("guard_tolerance", cty.NumberFloatVal(p.GuardTolerance))
			pb.SetAttributeValue("guard_undo", cty.BoolVal(p.GuardUndo))
		}
		switch {
		case p.EverySteps > 0:
			pb.SetAttributeValue("every_steps", cty.NumberIntVal(p.EverySteps))
		case p.EverySamples > 0:
			pb.SetAttributeValue("every_samples", cty.NumberIntVal(p.EverySamples))
		default:
			pb.SetAttributeValue("every_epochs", cty.NumberFloatVal(p.EveryEpochs))
		}
	}
	if t := j.Teacher; t != nil && t.File != "" {
		jb.AppendNewBlock("teacher", nil).Body().SetAttributeValue("file", cty.StringVal(t.File))
	} else if t != nil {
		tb := jb.AppendNewBlock("teacher", nil).Body()
		writeModel(tb, t.Model)
		tb.SetAttributeValue("epochs", cty.NumberIntVal(int64(t.Epochs)))
		tb.SetAttributeValue("count", cty.NumberIntVal(int64(t.Count)))
	}
	if dd := j.Distill; dd != nil {
		db := jb.AppendNewBlock("distill", nil).Body()
		db.SetAttributeValue("temperature", cty.NumberFloatVal(dd.Temperature))
		db.SetAttributeValue("alpha", cty.NumberFloatVal(dd.Alpha))
		if dd.Offline {
			db.SetAttributeValue("offline", cty.True)
		}
		if h := dd.Hint; h != nil {
			hb := db.AppendNewBlock("hint", nil).Body()
			hb.SetAttributeValue("teacher", cty.StringVal(h.Teacher))
			hb.SetAttributeValue("student", cty.StringVal(h.Student))
			hb.SetAttributeValue("weight", cty.NumberFloatVal(h.Weight))
		}
	}
	if cl := j.KMeans; cl != nil {
		cb := jb.AppendNewBlock("cluster", nil).Body()
		cb.SetAttributeValue("layers", stringList(cl.Layers))
		cb.SetAttributeValue("clusters", cty.NumberIntVal(int64(cl.Clusters)))
		cb.SetAttributeValue("from_epoch", cty.NumberFloatVal(cl.FromEpoch))
	}
	if q := j.Quantize; q != nil {
		qb := jb.AppendNewBlock("quantize", nil).Body()
		qb.SetAttributeValue("layers", stringList(q.Layers))
		qb.SetAttributeValue("bits", cty.NumberIntVal(int64(q.Bits)))
		qb.SetAttributeValue("from_epoch", cty.NumberFloatVal(q.FromEpoch))
		qb.SetAttributeValue("granularity", cty.StringVal(q.Granularity))
		qb.SetAttributeValue("symmetric", cty.BoolVal(q.Symmetric))
		if q.Activations > 0 {
			qb.SetAttributeValue("activations", cty.NumberIntVal(int64(q.Activations)))
		}
		if q.FreezeObserversEpoch > 0 {
			qb.SetAttributeValue("freeze_observers_epoch", cty.NumberFloatVal(q.FreezeObserversEpoch))
		}
		if len(q.Gradual) > 0 {
			var g, e []cty.Value
			for i := range q.Gradual {
				g = append(g, cty.NumberIntVal(int64(q.Gradual[i])))
				e = append(e, cty.NumberFloatVal(q.GradualEpochs[i]))
			}
			qb.SetAttributeValue("gradual", cty.ListVal(g))
			qb.SetAttributeValue("gradual_epochs", cty.ListVal(e))
		}
		if len(q.LayerBits) > 0 {
			lb := map[string]cty.Value{}
			for k, v := range q.LayerBits {
				lb[k] = cty.NumberIntVal(int64(v))
			}
			qb.SetAttributeValue("layer_bits", cty.MapVal(lb))
		}
	}
	if j.ThinAtEpoch > 0 {
		jb.AppendNewBlock("thin", nil).Body().SetAttributeValue("at_epoch", cty.NumberIntVal(int64(j.ThinAtEpoch)))
	}
	if s := j.Sensitivity; s != nil {
		sb := jb.AppendNewBlock("sensitivity", nil).Body()
		var sp []cty.Value
		for _, x := range s.Sparsities {
			sp = append(sp, cty.NumberFloatVal(x))
		}
		sb.SetAttributeValue("layers", stringList(s.Layers))
		sb.SetAttributeValue("sparsities", cty.ListVal(sp))
		sb.SetAttributeValue("tolerance", cty.NumberFloatVal(s.Tolerance))
		sb.SetAttributeValue("at_epoch", cty.NumberIntVal(int64(s.AtEpoch)))
	}
	for _, f := range j.Factorize {
		fb := jb.AppendNewBlock("factorize", nil).Body()
		fb.SetAttributeValue("layer", cty.StringVal(f.Layer))
		if f.Rank > 0 {
			fb.SetAttributeValue("rank", cty.NumberIntVal(int64(f.Rank)))
		} else {
			fb.SetAttributeValue("energy", cty.NumberFloatVal(f.Energy))
		}
		fb.SetAttributeValue("at_epoch", cty.NumberIntVal(int64(f.AtEpoch)))
	}
	for _, r := range j.Regularize {
		rb := jb.AppendNewBlock("regularize", []string{r.Kind}).Body()
		rb.SetAttributeValue("layers", stringList(r.Layers))
		if r.Kind == "group_lasso" {
			rb.SetAttributeValue("groups", cty.StringVal(r.Groups))
		}
		rb.SetAttributeValue("strength", cty.NumberFloatVal(r.Strength))
		if r.FinalStrength >= 0 {
			rb.SetAttributeValue("final_strength", cty.NumberFloatVal(r.FinalStrength))
		}
		rb.SetAttributeValue("from_epoch", cty.NumberFloatVal(r.FromEpoch))
		rb.SetAttributeValue("to_epoch", cty.NumberFloatVal(r.ToEpoch))
	}
	return f.Bytes()
}

// HistoryChanges lists the differences between two resolved jobs that
// would change a run's history — everything but the checkpoint block, the
// thread count and how the recipe was written (file, variables) — as
// "old line → new line" pairs of their rendered recipes. A resumed run
// refuses a recipe with any.
func (j *Job) HistoryChanges(old *Job) []string {
	norm := func(x *Job) []string {
		c := *x
		c.Checkpoint, c.Threads, c.Variables, c.File = Checkpoint{}, 0, nil, ""
		return strings.Split(strings.TrimSpace(string(c.HCL())), "\n")
	}
	a, b := norm(old), norm(j)
	var out []string
	for i := range max(len(a), len(b)) {
		var x, y string
		if i < len(a) {
			x = strings.Join(strings.Fields(a[i]), " ")
		}
		if i < len(b) {
			y = strings.Join(strings.Fields(b[i]), " ")
		}
		if x != y {
			out = append(out, fmt.Sprintf("%q → %q", x, y))
		}
	}
	return out
}
