package trainer

import (
	"errors"
	"fmt"
	"slices"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/graph"
)

// Unsupported is what a device cannot do yet of a training Config. Field
// names the recipe field that asks for it (empty when Policy does: the
// caller knows which recipe block made each policy).
type Unsupported struct {
	Device string
	Field  string
	Policy Policy
	What   string
	// Layer names the layer that asks for it, when one does (a graph
	// model's recipe points at its layer block).
	Layer string
}

func (u *Unsupported) Error() string {
	return fmt.Sprintf("%s is not supported on the %s device yet", u.What, u.Device)
}

// DeviceSupports is the one list of what training on cfg.Device cannot do
// yet (nil: it can do all of cfg). With gradientsOnly the device computes
// a data-parallel replica's micro-shard gradients (DeviceGradients) and the
// host runs the update and every policy; else it trains the whole step
// (Config.Device).
func DeviceSupports(cfg Config, gradientsOnly bool) error {
	dev := cfg.Device
	no := func(field, what string, args ...any) error {
		return &Unsupported{Device: deviceName(dev), Field: field, What: fmt.Sprintf(what, args...)}
	}
	m := cfg.Model
	if m.ClassWeights != nil {
		return no("class_balance", "class-balanced training")
	}
	if m.LabelSmoothing != 0 {
		return no("label_smoothing", "label smoothing")
	}
	if _, _, err := deviceLayers(m.Net.Layers); err != nil {
		u := no("model.arch", "model %q (%v)", m.Spec.Arch, err).(*Unsupported)
		var le *graph.LayerError
		if errors.As(err, &le) {
			u.Layer = le.Layer
		}
		return u
	}
	bn := slices.ContainsFunc(m.Net.Layers, func(l graph.Layer) bool { return l.Kind == graph.BatchNorm })
	if bn && gradientsOnly {
		return no("model.arch", "batch norms in a cluster replica's gradients")
	}
	for name, o := range m.ActQuant {
		if o.Spec.Symmetric || o.Spec.PerChannel {
			return no("quantize.activations", "symmetric or per-channel activation quantization (%s)", name)
		}
		if gradientsOnly {
			return no("quantize.activations", "activation quantization in a cluster replica's gradients (%s)", name)
		}
	}
	for name, ctl := range m.Quant {
		if ctl != nil && !ctl.Spec.Symmetric {
			return no("quantize.symmetric", "asymmetric quantization (%s)", name)
		}
	}
	switch {
	case cfg.Hint != nil:
		return no("distill.hint", "hint distillation")
	case len(cfg.Teachers) > 1:
		return no("teacher.count", "a teacher ensemble")
	case cfg.KD != nil && cfg.TeacherLogits != nil:
		return no("distill.offline", "offline distillation")
	case cfg.KD != nil && len(cfg.Teachers) == 0:
		return no("distill", "distillation without a teacher")
	}
	if gradientsOnly {
		return nil
	}
	o, ok := cfg.Optimizer.(*sgd)
	switch {
	case cfg.ClipNorm > 0:
		return no("optimizer.clip_norm", "gradient clipping")
	case cfg.Parallel != nil:
		return no("", "training spread over cluster workers")
	case !ok:
		return no("optimizer.kind", "this optimizer (sgd only)")
	case o.c.Nesterov:
		return no("optimizer.nesterov", "Nesterov momentum")
	case len(cfg.Factorize) > 0:
		return no("factorize.0", "low-rank factorization")
	case cfg.ThinAtEpoch > 0:
		return no("thin", "thinning")
	}
	for _, p := range cfg.Policies {
		what := ""
		switch p.(type) {
		case *LRPolicy, *PrunePolicy, *QuantPolicy:
			continue
		case *RegularizePolicy:
			what = "regularization"
		case *KMeansPolicy:
			what = "weight clustering"
		case *SensitivityPolicy:
			what = "sensitivity analysis"
		}
		_, extra := p.(ExtraLosser)
		_, after := p.(AfterUpdater)
		switch {
		case what != "":
		case extra:
			what = "a policy adding a loss term (" + p.Name() + ")"
		case after:
			what = "a policy run after every update (" + p.Name() + ")"
		default:
			continue // it sees the weights at epoch ends, or as a WeightReader
		}
		return &Unsupported{Device: deviceName(dev), Policy: p, What: what}
	}
	return nil
}

func deviceName(dev compute.Device) string {
	if dev == nil {
		return "(none)"
	}
	return dev.Name()
}
