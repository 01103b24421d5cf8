package run

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/profile"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
)

// costCell is one setting whose one-shot validation accuracy a target
// search measures: a configuration built into the dense model file
// (profile.Build) and run in the inference runtime; or, Config nil, the
// dense weights fake-quantized per channel — every weight to 8 bits, and
// Four's (when set) to 4. Each is evaluated on one thread of a fresh
// engine, here or on a cluster worker, so its accuracy is the same bits
// wherever it runs.
type costCell struct {
	Config *profile.Config `json:"config,omitempty"`
	Four   string          `json:"four,omitempty"`
}

// costCells lists the settings searchLoss needs: each prunable group at
// each width but the first, each weighted layer in each format but dense,
// and — with int8 among the precisions — the network in 8 bits and each
// weight in 4 beside the others' 8. The first cell is the dense model
// itself (the baseline the costs are measured from).
func costCells(p *profile.Profile, weights []string) []costCell {
	cells := []costCell{{Config: &profile.Config{}}}
	for g, grp := range p.Groups {
		if !grp.Prunable {
			continue
		}
		for _, w := range p.Widths[1:] {
			keep := slices.Repeat([]float64{1}, len(p.Groups))
			keep[g] = w
			cells = append(cells, costCell{Config: &profile.Config{Keep: keep}})
		}
	}
	for _, l := range p.Layers {
		if !l.Weighted {
			continue
		}
		for _, f := range p.Formats {
			if f != profile.Dense {
				cells = append(cells, costCell{Config: &profile.Config{Format: map[string]string{l.Name: f}}})
			}
		}
	}
	if slices.Contains(p.Precisions, profile.Int8) {
		cells = append(cells, costCell{})
		for _, w := range weights {
			cells = append(cells, costCell{Four: w})
		}
	}
	return cells
}

// accuracy evaluates the cell from the dense model file on val, on one
// thread. It does not change dense.
func (c costCell) accuracy(dense *checkpoint.File, val *data.Set) (float64, error) {
	eng := cpu.New(cpu.Options{Threads: 1, Logger: hclog.NewNullLogger()})
	if c.Config != nil {
		f, err := profile.Build(dense, *c.Config)
		if err != nil {
			return 0, err
		}
		return fileAccuracy(f, eng, val)
	}
	m, _, err := rundir.LoadModel(dense)
	if err != nil {
		return 0, err
	}
	return quantizedAccuracy(m, eng, val, 500, func(name string) int {
		if name == c.Four {
			return 4
		}
		return 8
	})
}

// searchLoss measures each setting's one-shot cost (costCells): the
// validation accuracy the dense model loses with that setting alone (a
// group thinned, a layer sparse or 2:4, the network quantized — its
// weights to 8 bits; the activations' ranges are learned in the
// fine-tune —, a layer's weights in 4 bits rather than 8), not retrained,
// at least 0. It ranks settings; the fine-tune recovers much of it. The
// cells are evaluated by eval (evalCostsHere, or a cluster's workers).
func searchLoss(dense *checkpoint.File, p *profile.Profile, eval costEvaluator, log hclog.Logger) (profile.Loss, error) {
	m, _, err := rundir.LoadModel(dense)
	if err != nil {
		return profile.Loss{}, err
	}
	var weights []string
	for _, w := range m.Weights() {
		weights = append(weights, w.Name)
	}
	cells := costCells(p, weights)
	start := time.Now()
	accs, err := eval(cells)
	if err != nil {
		return profile.Loss{}, err
	}
	loss := profile.Loss{Width: make([][]float64, len(p.Groups)), Format: map[string]map[string]float64{}}
	base, k := accs[0], 1
	next := func() float64 { k++; return accs[k-1] }
	for g, grp := range p.Groups {
		if !grp.Prunable {
			continue
		}
		loss.Width[g] = []float64{0}
		for range p.Widths[1:] {
			loss.Width[g] = append(loss.Width[g], max(0, base-next()))
		}
	}
	for _, l := range p.Layers {
		if !l.Weighted {
			continue
		}
		loss.Format[l.Name] = map[string]float64{}
		for _, f := range p.Formats {
			if f != profile.Dense {
				loss.Format[l.Name][f] = max(0, base-next())
			}
		}
	}
	if slices.Contains(p.Precisions, profile.Int8) {
		q8 := next()
		v := max(0, base-q8)
		loss.Int8 = &v
		loss.Bits4 = map[string]float64{}
		for _, w := range weights {
			loss.Bits4[w] = max(0, q8-next())
		}
	}
	log.Info("settings' one-shot costs measured", "settings", len(cells), "seconds", int(time.Since(start).Seconds()))
	return loss, nil
}

// costEvaluator returns each cell's validation accuracy, in order.
type costEvaluator func([]costCell) ([]float64, error)

// evalCostsHere evaluates the cells in this process, as many at once as
// there are cores (each on its own one-thread engine).
func evalCostsHere(dense *checkpoint.File, val *data.Set, log hclog.Logger) costEvaluator {
	return func(cells []costCell) ([]float64, error) {
		accs := make([]float64, len(cells))
		errs := make([]error, len(cells))
		var next, done atomic.Int64
		var wg sync.WaitGroup
		for range min(runtime.GOMAXPROCS(0), len(cells)) {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < len(cells); i = int(next.Add(1) - 1) {
					accs[i], errs[i] = cells[i].accuracy(dense, val)
					if d := int(done.Add(1)); d%max(1, len(cells)/5) == 0 {
						log.Info("settings' costs", "done", d, "of", len(cells))
					}
				}
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				return nil, fmt.Errorf("run: target: setting %d: %w", i, err)
			}
		}
		return accs, nil
	}
}

// evalCostsOnWorkers has a cluster's workers evaluate the cells ("cost"
// tasks, one cell each) from the dense model file, which goes to the
// job's store once.
func evalCostsOnWorkers(ctx context.Context, job *recipes.Job, opts Options, dense *checkpoint.File, log hclog.Logger) costEvaluator {
	return func(cells []costCell) ([]float64, error) {
		t0 := time.Now()
		accs, st, err := accuracyTasks(ctx, job, opts, dense, "cost", len(cells), func(k int, t *cluster.TaskSpec) (err error) {
			t.Cell, err = json.Marshal(cells[k])
			return err
		}, func(t cluster.TaskSpec) string { return "target setting " + string(t.Cell) })
		if err != nil {
			return nil, err
		}
		log.Info("settings' costs evaluated by the workers", "settings", len(cells), "per_worker", st.PerWorker, "retried", st.Retried, "seconds", fmt.Sprintf("%.1f", time.Since(t0).Seconds()))
		return accs, nil
	}
}

// costTask evaluates one cell of a target search on a worker.
func costTask(val *data.Set, spec cluster.TaskSpec, files map[string][]byte) ([]byte, map[string][]byte, error) {
	if len(spec.Inputs) != 1 {
		return nil, nil, fmt.Errorf("run: a target setting needs one model file, got %d", len(spec.Inputs))
	}
	var c costCell
	if err := json.Unmarshal(spec.Cell, &c); err != nil {
		return nil, nil, fmt.Errorf("run: a target setting: %w", err)
	}
	f, err := checkpoint.Decode(files[spec.Inputs[0]])
	if err != nil {
		return nil, nil, fmt.Errorf("run: the target search's dense model: %w", err)
	}
	acc, err := c.accuracy(f, val)
	if err != nil {
		return nil, nil, err
	}
	return accuracyAnswer(acc)
}
