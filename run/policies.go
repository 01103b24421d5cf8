package run

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/schedule"
	"github.com/lathe-ml/lathe/trainer"
)

// weightIndex finds a weight by name, or returns a recipe error listing the
// model's weights.
func weightIndex(job *recipes.Job, m *model.Model, field, name string) (int, error) {
	i := slices.IndexFunc(m.Params, func(p *model.Param) bool { return p.Name == name && !p.Bias })
	if i >= 0 {
		return i, nil
	}
	var weights []string
	for _, w := range m.Weights() {
		weights = append(weights, w.Name)
	}
	return -1, job.Errorf(field, "model %s has no layer %q (its weights: %s)", modelName(job), name, strings.Join(weights, ", "))
}

// checkGranularity rejects a structure that does not fit a layer's kind.
func checkGranularity(job *recipes.Job, field string, p *model.Param, g string) error {
	allowed := []string{"rows", "columns"}
	if len(p.Shape) == 4 {
		allowed = []string{"filters", "channels", "groups"}
	}
	if !slices.Contains(allowed, g) {
		return job.Errorf(field, "granularity %q does not fit layer %s %v (allowed: %s)", g, p.Name, p.Shape, strings.Join(allowed, ", "))
	}
	return nil
}

// checkLayers checks that every name is a weight of the model and, when
// granularity is set, that the structure fits each layer; errors point at
// the recipe fields given. A name with a wildcard (*, ?, [) is a pattern
// (path.Match: "*" is every weight, "block*.conv?" some) that stands for
// the weights it matches, in the model's order; each layer comes once.
func checkLayers(job *recipes.Job, m *model.Model, layersField string, names []string, granField, granularity string) ([]string, error) {
	var out []string
	add := func(p *model.Param) error {
		if granularity != "" {
			if err := checkGranularity(job, granField, p, granularity); err != nil {
				return err
			}
		}
		if !slices.Contains(out, p.Name) {
			out = append(out, p.Name)
		}
		return nil
	}
	for _, name := range names {
		if !strings.ContainsAny(name, "*?[") {
			i, err := weightIndex(job, m, layersField, name)
			if err == nil {
				err = add(m.Params[i])
			}
			if err != nil {
				return nil, err
			}
			continue
		}
		matched := false
		for _, w := range m.Weights() {
			ok, err := path.Match(name, w.Name)
			if err != nil {
				return nil, job.Errorf(layersField, "layer pattern %q: %v", name, err)
			}
			if ok {
				if err := add(w); err != nil {
					return nil, err
				}
				matched = true
			}
		}
		if !matched {
			_, err := weightIndex(job, m, layersField, name) // names the weights
			return nil, err
		}
	}
	return out, nil
}

// attentionLayers resolves a heads block's layers — attention layers'
// names or patterns of them (every attention layer when none) — in the
// model's order; errors point at the recipe field.
func attentionLayers(job *recipes.Job, m *model.Model, field string, names []string) ([]string, error) {
	var all, out []string
	for _, l := range m.Net.Layers {
		if l.Kind == graph.Attention {
			all = append(all, l.Name)
		}
	}
	if len(all) == 0 {
		return nil, job.Errorf(field, "granularity \"heads\" prunes attention layers; model %s has none", modelName(job))
	}
	if len(names) == 0 {
		return all, nil
	}
	for _, l := range all {
		for _, name := range names {
			ok, err := path.Match(name, l)
			if err != nil {
				return nil, job.Errorf(field, "layer pattern %q: %v", name, err)
			}
			if ok && !slices.Contains(out, l) {
				out = append(out, l)
			}
		}
	}
	for _, name := range names {
		if !slices.ContainsFunc(all, func(l string) bool { ok, _ := path.Match(name, l); return ok }) {
			return nil, job.Errorf(field, "%q names no attention layer (the model's: %s)", name, strings.Join(all, ", "))
		}
	}
	return out, nil
}

// checkGroups checks that each layer's output channels form a prunable
// dependency group (graph.ChannelGroups).
func checkGroups(job *recipes.Job, m *model.Model, field string, layers []string) error {
	groups, err := m.Net.ChannelGroups()
	if err != nil {
		return job.Errorf(field, "%v", err)
	}
	for _, l := range layers {
		for _, g := range groups {
			if slices.ContainsFunc(g.Members, func(mb graph.Member) bool { return mb.Param == l && mb.Role == "out" }) && !g.Prunable {
				return job.Errorf(field, "layer %s's output channels cannot be pruned: they are the network's outputs, or a grouped convolution mixes them", l)
			}
		}
	}
	return nil
}

// regularizePolicies builds the job's regularize blocks.
func regularizePolicies(job *recipes.Job, m *model.Model, epochSamples int64) ([]trainer.Policy, error) {
	var out []trainer.Policy
	for bi, rb := range job.Regularize {
		field := func(f string) string { return fmt.Sprintf("regularize.%d.%s", bi, f) }
		pol := &trainer.RegularizePolicy{Kind: rb.Kind, Granularity: compress.Granularity(rb.Groups), Strength: rb.Strength, FinalStrength: rb.FinalStrength,
			Start: int64(rb.FromEpoch * float64(epochSamples))}
		if rb.ToEpoch > 0 {
			pol.End = int64(rb.ToEpoch * float64(epochSamples))
		}
		groups := ""
		if rb.Kind == "group_lasso" {
			groups = rb.Groups
		}
		var err error
		if pol.Layers, err = checkLayers(job, m, field("layers"), rb.Layers, field("groups"), groups); err != nil {
			return nil, err
		}
		out = append(out, pol)
	}
	return out, nil
}

// prunePolicies builds the job's prune blocks into policies, checking what
// the recipe could not check alone (layer names, granularities that fit the
// layers) and pointing at the recipe line when they are wrong.
func prunePolicies(job *recipes.Job, m *model.Model, epochSamples int64, log hclog.Logger) ([]trainer.Policy, error) {
	var out []trainer.Policy
	for bi, pb := range job.Prune {
		field := func(f string) string { return fmt.Sprintf("prune.%d.%s", bi, f) }
		pol := &trainer.PrunePolicy{Label: fmt.Sprintf("%s#%d", pb.Method, bi+1), Norm: compress.Norm(pb.Norm),
			Global: pb.Scope == "global", N: pb.N, M: pb.M, Logger: log.Named("prune")}
		switch pb.Method {
		case "magnitude":
			pol.Granularity = compress.Element
		case "nm":
			pol.Granularity = compress.NM
		default:
			pol.Granularity = compress.Granularity(pb.Granularity)
		}
		granularity := ""
		if pb.Method == "structured" {
			granularity = pb.Granularity
		}
		var err error
		if granularity == "heads" {
			pol.Layers, err = attentionLayers(job, m, field("layers"), pb.Layers)
		} else {
			pol.Layers, err = checkLayers(job, m, field("layers"), pb.Layers, field("granularity"), granularity)
		}
		if err != nil {
			return nil, err
		}
		if granularity == "groups" {
			if err := checkGroups(job, m, field("layers"), pol.Layers); err != nil {
				return nil, err
			}
		}
		pol.Schedule = pruneSchedule(job, pb, epochSamples)
		if pb.Method == "nm" {
			pol.Schedule.Final, pol.Schedule.Initial = 0, 0 // the pattern, not a target, decides
		}
		if pb.GuardTolerance > 0 {
			pol.Guard = &schedule.Guard{Tolerance: pb.GuardTolerance, Undo: pb.GuardUndo}
		}
		if err := pol.Schedule.Validate(); err != nil {
			return nil, job.Errorf(field("schedule"), "%v", err)
		}
		out = append(out, pol)
	}
	return out, nil
}

// factorizations checks the job's factorize blocks against the model: a
// linear layer it has, a rank the layer allows.
func factorizations(job *recipes.Job, m *model.Model) ([]trainer.FactorizeAt, error) {
	var out []trainer.FactorizeAt
	for bi, f := range job.Factorize {
		field := func(s string) string { return fmt.Sprintf("factorize.%d.%s", bi, s) }
		i, err := weightIndex(job, m, field("layer"), f.Layer)
		if err != nil {
			return nil, err
		}
		p := m.Params[i]
		if len(p.Shape) != 2 {
			return nil, job.Errorf(field("layer"), "layer %s %v is a convolution; only linear layers are factorized", p.Name, p.Shape)
		}
		if full := min(p.Shape[0], p.Shape[1]); f.Rank > full {
			return nil, job.Errorf(field("rank"), "rank %d is larger than layer %s %v allows (at most %d)", f.Rank, p.Name, p.Shape, full)
		}
		out = append(out, trainer.FactorizeAt{Layer: f.Layer, Rank: f.Rank, Energy: f.Energy, Epoch: f.AtEpoch})
	}
	return out, nil
}

// sensitivityPolicy builds the job's sensitivity block, feeding the prune
// policies whose targets come from it.
func sensitivityPolicy(job *recipes.Job, m *model.Model, val *data.Set, prune []trainer.Policy, log hclog.Logger) (*trainer.SensitivityPolicy, error) {
	sb := job.Sensitivity
	if sb == nil {
		return nil, nil
	}
	if val == nil {
		return nil, job.Errorf("sensitivity", "a sensitivity analysis evaluates on the validation split; set validation > 0")
	}
	layers, err := checkLayers(job, m, "sensitivity.layers", sb.Layers, "", "")
	if err != nil {
		return nil, err
	}
	p := &trainer.SensitivityPolicy{Layers: layers, Sparsities: sb.Sparsities, Tolerance: sb.Tolerance, Epoch: sb.AtEpoch, Logger: log.Named("sensitivity")}
	for i, pb := range job.Prune {
		if pb.TargetsFrom == "sensitivity" {
			p.Feed = append(p.Feed, prune[i].(*trainer.PrunePolicy))
		}
	}
	return p, nil
}

// kmeansPolicy builds the cluster block's weight sharing.
func kmeansPolicy(job *recipes.Job, m *model.Model, epochSamples int64, log hclog.Logger) (*trainer.KMeansPolicy, error) {
	cl := job.KMeans
	if cl == nil {
		return nil, nil
	}
	layers, err := checkLayers(job, m, "cluster.layers", cl.Layers, "", "")
	if err != nil {
		return nil, err
	}
	return &trainer.KMeansPolicy{Layers: layers, Clusters: cl.Clusters, Start: int64(cl.FromEpoch * float64(epochSamples)),
		Logger: log.Named("cluster")}, nil
}

// quantizePolicy sets up the model's quantization controls and the policy
// that schedules them.
func quantizePolicy(job *recipes.Job, m *model.Model, epochSamples int64, log hclog.Logger) (*trainer.QuantPolicy, error) {
	q := job.Quantize
	if q == nil {
		return nil, nil
	}
	spec := model.QuantSpec{Bits: q.Bits, Symmetric: q.Symmetric, PerChannel: q.Granularity == "per_channel"}
	layers, err := checkLayers(job, m, "quantize.layers", q.Layers, "", "")
	if err != nil {
		return nil, err
	}
	m.Quant = map[string]*model.QuantControl{}
	for _, l := range layers {
		m.Quant[l] = &model.QuantControl{Spec: spec}
	}
	for l := range q.LayerBits {
		if _, ok := m.Quant[l]; !ok {
			return nil, job.Errorf("quantize.layer_bits", "layer_bits names %q, which is not in quantize.layers", l)
		}
	}
	p := &trainer.QuantPolicy{Layers: layers, LayerBits: q.LayerBits, Logger: log.Named("quantize"),
		Steps:      []trainer.QuantStep{{Start: int64(q.FromEpoch * float64(epochSamples)), Bits: q.Bits}},
		FreezeAt:   int64(q.FreezeObserversEpoch * float64(epochSamples)),
		FreezeBNAt: int64(q.FreezeBNEpoch * float64(epochSamples))}
	if q.FreezeBNEpoch > 0 {
		if len(m.Buffers) == 0 {
			return nil, job.Errorf("quantize.freeze_bn_epoch", "model %s has no batch norm to freeze", modelName(job))
		}
		m.BN = &model.BNControl{}
	}
	if q.FoldBatchNorms {
		pairs := m.Net.FoldPairs()
		for _, l := range layers {
			if bn, ok := pairs[l]; ok {
				if m.Fold == nil {
					m.Fold = map[string]string{}
				}
				m.Fold[l] = bn
			}
		}
	}
	if q.Activations > 0 {
		if ls := m.Net.Layers; len(ls) > 0 && ls[0].Kind == graph.Embedding {
			return nil, job.Errorf("quantize.activations", "activations are quantized unsigned, as a ReLU leaves them; a transformer's (embeddings, layer norms, residual sums) are signed: quantize its weights only")
		}
		p.Observers = m.Observed(layers)
		m.ActQuant = map[string]*model.Observer{}
		for _, l := range p.Observers {
			m.ActQuant[l] = &model.Observer{Spec: model.QuantSpec{Bits: q.Activations}, Momentum: 0.9}
		}
	}
	for i, b := range q.Gradual {
		p.Steps = append(p.Steps, trainer.QuantStep{Start: int64(q.GradualEpochs[i] * float64(epochSamples)), Bits: b})
	}
	return p, nil
}

// pruneSchedule is a prune block's sparsity schedule in samples (not yet
// validated: callers adjust it first).
func pruneSchedule(job *recipes.Job, pb recipes.Prune, epochSamples int64) schedule.Sparsity {
	every := pb.EverySamples
	switch {
	case pb.EverySteps > 0:
		every = pb.EverySteps * int64(job.Batch)
	case every == 0:
		every = max(1, int64(pb.EveryEpochs*float64(epochSamples)))
	}
	return schedule.Sparsity{Kind: pb.Schedule, Initial: pb.Initial, Final: pb.Target, Power: pb.Power,
		Start: int64(pb.FromEpoch * float64(epochSamples)), End: int64(pb.ToEpoch * float64(epochSamples)), Every: every}
}
