package trainer

import (
	"context"
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"

	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/data"
)

// backend is what Run's one loop asks of the hardware a model trains on:
// the gorgonia graph on the CPU (graphBackend) or a network resident on a
// compute.Device (deviceBackend). The loop owns the schedule, the policies,
// the metrics and the snapshots; a backend owns the forward and backward
// passes, the update and where the parameters live between steps.
type backend interface {
	// beginEpoch is told each epoch's sample order before its first step
	// (a resumed epoch included).
	beginEpoch(epoch int, order []int) error
	// load puts the samples idx into the step's inputs (outside the
	// timed part of a step).
	load(idx []int, epoch int)
	// train runs the inEpoch-th step of epoch on the samples idx:
	// forward, loss, backward, the policies' extra terms and the
	// optimizer's update of State.Params (wherever they live).
	train(ctx context.Context, idx []int, epoch, inEpoch int) error
	// sums returns the epoch's running sums: r plus what the backend holds
	// itself (a device accumulates its losses where it computes them).
	sums(r running) (running, error)
	evaluate(set *data.Set) (acc, loss float64, err error)
	// pull brings the parameters to State.Params (the model's own data);
	// push sends State.Params and State.Masks back after a policy changed
	// them. Both do nothing where the parameters live on the host.
	pull() error
	push() error
	// save adds the backend's part of the state to a snapshot (the
	// optimizer's buffers, random streams); restore puts it back.
	save(sn *Snapshot) error
	restore(sn *Snapshot) error
	close()
}

// graphBackend trains on the gorgonia graph the Trainer builds (build,
// rebuild), data-parallel when the Trainer has a Parallel.
type graphBackend struct{ t *Trainer }

func (g graphBackend) beginEpoch(int, []int) error { return nil }

func (g graphBackend) load(idx []int, epoch int) {
	t := g.t
	if t.cfg.Parallel == nil {
		t.batch.Fill(t.net.XValue.Float32s(), t.net.YValue.Float32s(), idx, epoch)
		t.curIdx = idx
	}
}

func (g graphBackend) train(ctx context.Context, idx []int, epoch, _ int) error {
	t := g.t
	s := &t.state
	projGrad := func() []float32 { return f32s(t.projGrad.Value()) }
	t.updated, t.extraDone = false, false
	if t.cfg.Parallel != nil {
		if err := t.parallelStep(ctx, idx, epoch); err != nil {
			return err
		}
		projGrad = func() []float32 { return t.projGradPar }
	} else {
		if err := t.forwardBackward(); err != nil {
			return err
		}
		s.Loss = float64(f32s(t.net.Loss.Value())[0])
		for i, g := range t.grads {
			s.Grads[i] = f32s(g.Value())
		}
		t.lastKD, t.lastCorrect = t.distillTerm(), t.net.Correct()
	}
	if !t.extraDone { // a replica that updated a chunk added them there
		v, err := t.extraLoss()
		if err != nil {
			return err
		}
		s.ExtraLoss = v
	}
	if err := finite(s, s.Loss+s.ExtraLoss); err != nil {
		return err
	}
	if !t.updated { // else the chunks' owners updated the parameters
		if t.cfg.ClipNorm > 0 {
			clipGradients(s.Grads, t.cfg.ClipNorm)
		}
		t.cfg.Optimizer.Step(s.Params, s.Grads, s.Masks, float32(s.LR))
		if t.projGrad != nil {
			t.cfg.Hint.Optimizer.Step([][]float32{t.proj.Float32s()}, [][]float32{projGrad()}, nil, float32(s.LR))
		}
	}
	return nil
}

// finite refuses a non-finite loss.
func finite(s *State, l float64) error {
	if math.IsNaN(l) || math.IsInf(l, 0) {
		return fmt.Errorf("%w at step %d (epoch %d, %d samples seen): loss %v; lower the learning rate or check the data",
			ErrNonFinite, s.Step+1, s.Epoch+1, s.SamplesSeen, l)
	}
	return nil
}

func (g graphBackend) sums(r running) (running, error) { return r, nil }

func (g graphBackend) evaluate(set *data.Set) (acc, loss float64, err error) {
	t := g.t
	if t.evalNt == nil {
		if t.evalNt, err = t.cfg.Model.Build(t.cfg.Engine, t.cfg.EvalBatch, false, 0, compress.Hooks()); err != nil {
			return 0, 0, err
		}
		t.evalVM = G.NewTapeMachine(t.evalNt.Graph, G.WithEngine(engineOf(t.cfg.Engine)))
	}
	return evaluate(t.evalNt, t.evalVM, set)
}

func (g graphBackend) pull() error { return nil }
func (g graphBackend) push() error { return nil }

func (g graphBackend) save(sn *Snapshot) error {
	t := g.t
	sn.Optimizer, sn.OptimizerSteps = t.cfg.Optimizer.State(), t.cfg.Optimizer.Steps()
	for _, d := range t.net.Dropouts {
		sn.Dropout = append(sn.Dropout, d.Calls)
	}
	if t.proj != nil {
		sn.HintProjection = t.proj.Float32s()
		sn.HintOptimizer, sn.HintOptimizerSteps = t.cfg.Hint.Optimizer.State(), t.cfg.Hint.Optimizer.Steps()
	}
	return nil
}

func (g graphBackend) restore(sn *Snapshot) error {
	t := g.t
	if len(sn.Dropout) != len(t.net.Dropouts) {
		if sn.Backend != "" {
			return fmt.Errorf("trainer: resume: the checkpoint was written on the %s device, whose dropout masks are drawn differently: resume it there", sn.Backend)
		}
		return fmt.Errorf("trainer: resume: %d dropout streams for %d dropout ops", len(sn.Dropout), len(t.net.Dropouts))
	}
	if err := t.cfg.Optimizer.Load(sn.Optimizer, sn.OptimizerSteps); err != nil {
		return err
	}
	if (t.proj != nil) != (sn.HintProjection != nil) {
		return fmt.Errorf("trainer: resume: a hint in only one of the recipe and the checkpoint")
	}
	if t.proj != nil {
		if len(sn.HintProjection) != len(t.proj.Float32s()) {
			return fmt.Errorf("trainer: resume: hint projection of %d values, want %d", len(sn.HintProjection), len(t.proj.Float32s()))
		}
		copy(t.proj.Float32s(), sn.HintProjection)
		if err := t.cfg.Hint.Optimizer.Load(sn.HintOptimizer, sn.HintOptimizerSteps); err != nil {
			return err
		}
	}
	for i, d := range t.net.Dropouts {
		d.Calls = sn.Dropout[i]
	}
	return nil
}

func (g graphBackend) close() { g.t.closeGraphs() }
