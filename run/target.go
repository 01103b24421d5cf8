package run

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/onnx"
	"github.com/lathe-ml/lathe/profile"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
)

// Files of a target search's run directory.
const (
	SearchFile      = "search.json"
	ParetoFile      = "pareto.csv"
	ChosenRecipe    = "chosen.hcl"
	ProfileFile     = "profile.json"
	SearchLossFile  = "search-sensitivity.json"
	searchTimingDur = 300 * time.Millisecond
)

// Search is search.json: the dense model, every point explored and the
// one chosen.
type Search struct {
	BudgetUs          float64       `json:"budget_us"`                     // 0: no latency budget
	BudgetBytes       int64         `json:"budget_bytes"`                  // 0: no size budget
	BudgetMemory      int64         `json:"budget_memory_bytes,omitempty"` // 0: no memory budget
	Batch             int           `json:"batch"`
	Threads           int           `json:"threads"`
	MaxAccuracyDrop   float64       `json:"max_accuracy_drop"`
	Profile           string        `json:"profile"`
	ProfiledHere      bool          `json:"profiled_here"`
	DenseLatencyUs    float64       `json:"dense_latency_us"`
	DenseValAccuracy  float64       `json:"dense_val_accuracy"`
	DenseTestAccuracy float64       `json:"dense_test_accuracy"`
	DenseBytes        int64         `json:"dense_model_bytes"`
	DenseMemory       int64         `json:"dense_memory_bytes,omitempty"` // the profile's: the runtime's memory at the batch
	Points            []SearchPoint `json:"points"`
	Chosen            int           `json:"chosen"` // index into Points; -1: none
	Met               bool          `json:"met"`    // the chosen point meets the budget and the accuracy bound
}

// SearchPoint is one round: the solver's configuration, what it predicted,
// and what the fine-tuned model measured.
type SearchPoint struct {
	Round              int            `json:"round"`
	SolverBudget       profile.Budget `json:"solver_budget"`
	Config             profile.Config `json:"config"`
	PredictedLoss      float64        `json:"predicted_loss"`
	PredictedLatencyUs float64        `json:"predicted_latency_us"`
	PredictedBytes     float64        `json:"predicted_bytes"`
	PredictedMemory    float64        `json:"predicted_memory_bytes,omitempty"`
	// MeasuredLatencyUs is the fine-tuned model file's, in the runtime on
	// this machine (-1 with a profile from another machine: its
	// prediction is then what the budget is held to).
	MeasuredLatencyUs float64 `json:"measured_latency_us"`
	PredictionError   float64 `json:"prediction_error"` // predicted/measured − 1
	// MeasuredMemory is the runtime's memory with the model file at the
	// target's batch, measured with the latency (-1 where that is not).
	MeasuredMemory int64   `json:"measured_memory_bytes"`
	ModelBytes     int64   `json:"model_bytes"`
	ValAccuracy    float64 `json:"val_accuracy"`
	TestAccuracy   float64 `json:"test_accuracy"`
	Met            bool    `json:"met"`
	RunDir         string  `json:"run_dir"`
	Recipe         string  `json:"recipe"`
}

// budget is the search's budget.
func (s *Search) budget() profile.Budget {
	return profile.Budget{LatencyUs: s.BudgetUs, ModelBytes: float64(s.BudgetBytes), MemoryBytes: float64(s.BudgetMemory)}
}

// latency is the point's measured latency, or its prediction where it
// was not measured; memory likewise.
func (p *SearchPoint) latency() float64 {
	if p.MeasuredLatencyUs >= 0 {
		return p.MeasuredLatencyUs
	}
	return p.PredictedLatencyUs
}

func (p *SearchPoint) memory() float64 {
	if p.MeasuredMemory >= 0 {
		return float64(p.MeasuredMemory)
	}
	return p.PredictedMemory
}

// searchTarget runs a recipe's target search (docs/target.md): the dense
// model (the model file, or trained first in <run-dir>/dense), its profile
// (given, or measured here), each setting's one-shot sensitivity on the
// validation split, then rounds of solve → fine-tune → measure, the
// solver's budget tightened by what a round missed. The chosen round's
// model file and summary are the run's.
func searchTarget(ctx context.Context, job *recipes.Job, opts Options) (*rundir.Summary, error) {
	if err := Check(job); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	log = log.Named("target")
	t := job.Target
	dir := runDir(job, opts)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	densePath, err := denseModel(ctx, job, opts, dir, log)
	if err != nil {
		return nil, err
	}
	opt := onnx.Options{Dataset: job.Dataset}
	if densePath == job.Model.File { // (a trained dense run's file has its normalization)
		opt = importOptions(job, job.Model)
	}
	dense, err := onnx.ReadModelWith(densePath, opt)
	if err != nil {
		return nil, err
	}
	eng := cpu.New(cpu.Options{Threads: t.Threads, Logger: hclog.NewNullLogger(), Spin: infer.Spin})
	var workers costEvaluator
	if opts.Cluster != nil {
		workers = evalCostsOnWorkers(ctx, job, opts, dense, log)
	}
	s, p, loss, err := searchSetup(job, dense, densePath, eng, dir, workers, log)
	if err != nil {
		return nil, err
	}
	here := s.ProfiledHere
	if here && opts.Cluster != nil {
		log.Warn("the rounds' latencies are measured here while the cluster's workers wait for the next round; workers on this machine compete for its cores and make them read high — search in-process, or keep the workers on other machines")
	}
	if err := rundir.WriteJSON(filepath.Join(dir, SearchLossFile), loss); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	dm, _, err := rundir.LoadModel(dense)
	if err != nil {
		return nil, err
	}
	rr := &rounds{job: job, opts: opts, dir: dir, densePath: densePath, dense: dm, p: p, eng: eng, measure: here, log: log}
	var sums []*rundir.Summary
	solverBudget := s.budget()
	for round := 1; round <= t.Rounds; round++ {
		sol, err := p.Solve(loss, solverBudget)
		if err != nil {
			return nil, err
		}
		if !sol.Met && slices.ContainsFunc(s.Points, func(q SearchPoint) bool { return reflect.DeepEqual(q.Config, sol.Config) }) {
			log.Info("nothing closer to the budget: the search stops", "round", round)
			break // the solver's closest is a configuration already trained
		}
		log.Info("round", "round", round, "solver_budget_us", solverBudget.LatencyUs, "solver_budget_bytes", solverBudget.ModelBytes, "solver_budget_memory", solverBudget.MemoryBytes,
			"predicted_us", sol.PredictedUs, "predicted_bytes", sol.PredictedBytes, "predicted_memory", sol.PredictedMemory, "predicted_loss", sol.Loss, "met", sol.Met, "method", sol.Method)
		pt := SearchPoint{Round: round, SolverBudget: solverBudget, Config: sol.Config, PredictedLoss: sol.Loss, PredictedLatencyUs: sol.PredictedUs, PredictedBytes: sol.PredictedBytes,
			PredictedMemory: sol.PredictedMemory, MeasuredLatencyUs: -1, MeasuredMemory: -1}
		sum, err := rr.run(ctx, &pt)
		if err != nil {
			return nil, err
		}
		sums = append(sums, sum)
		latency, memory := pt.latency(), pt.memory()
		fast := s.BudgetUs == 0 || latency <= s.BudgetUs
		small := s.BudgetBytes == 0 || pt.ModelBytes <= s.BudgetBytes
		light := s.BudgetMemory == 0 || memory <= float64(s.BudgetMemory)
		pt.Met = fast && small && light && s.DenseValAccuracy-pt.ValAccuracy <= t.MaxAccuracyDrop
		s.Points = append(s.Points, pt)
		log.Info("round done", "round", round, "latency_us", latency, "val_accuracy", pt.ValAccuracy, "test_accuracy", pt.TestAccuracy, "bytes", pt.ModelBytes, "memory", memory, "met", pt.Met)
		if pt.Met || (fast && small && light) {
			break // met; or the budget met and the accuracy not: a tighter budget only loses more
		}
		if !fast { // tighten by the miss
			solverBudget.LatencyUs *= s.BudgetUs / latency
		}
		if !small {
			solverBudget.ModelBytes *= float64(s.BudgetBytes) / float64(pt.ModelBytes)
		}
		if !light {
			solverBudget.MemoryBytes *= float64(s.BudgetMemory) / memory
		}
	}
	s.Chosen, s.Met = choose(s)
	if err := writeSearch(dir, s, job); err != nil {
		return nil, err
	}
	if s.Chosen < 0 {
		return nil, errors.New("run: target: no round finished")
	}
	pt := s.Points[s.Chosen]
	for _, name := range []string{rundir.ModelFile, rundir.SummaryFile} {
		b, err := os.ReadFile(filepath.Join(pt.RunDir, name))
		if err != nil {
			return nil, fmt.Errorf("run: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return nil, fmt.Errorf("run: %w", err)
		}
	}
	rb, _ := os.ReadFile(pt.Recipe)
	if err := os.WriteFile(filepath.Join(dir, ChosenRecipe), rb, 0o644); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	if !s.Met {
		log.Warn("target not met: the closest round is the run's model", "round", pt.Round, "budget_us", s.BudgetUs)
	}
	return sums[s.Chosen], nil
}

// rounds runs a search's rounds.
type rounds struct {
	job       *recipes.Job
	opts      Options
	dir       string
	densePath string
	dense     *model.Model
	p         *profile.Profile
	eng       compute.Engine
	measure   bool // the profile is this machine's: measure each round's model
	log       hclog.Logger
}

// run fine-tunes the dense model with a point's configuration (its
// recipe <run-dir>/round-K.hcl, its run round-K/) and fills in what the
// result measured.
func (r *rounds) run(ctx context.Context, pt *SearchPoint) (*rundir.Summary, error) {
	rj, err := roundJob(r.job, r.densePath, r.dense, r.p, pt.Config, pt.Round)
	if err != nil {
		return nil, err
	}
	pt.RunDir = filepath.Join(r.dir, fmt.Sprintf("round-%d", pt.Round))
	pt.Recipe = pt.RunDir + ".hcl"
	if err := os.WriteFile(pt.Recipe, rj.HCL(), 0o644); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	ro := r.opts
	ro.RunDir, ro.Logger = pt.RunDir, r.log.Named(fmt.Sprintf("round-%d", pt.Round))
	sum, err := Execute(ctx, rj, ro)
	if err != nil {
		return nil, fmt.Errorf("run: target round %d: %w", pt.Round, err)
	}
	path := filepath.Join(pt.RunDir, rundir.ModelFile)
	mf, err := checkpoint.Read(path)
	if err != nil {
		return nil, err
	}
	pt.ValAccuracy, pt.TestAccuracy = sum.ValAccuracy, sum.TestAccuracy
	if st, err := os.Stat(path); err == nil {
		pt.ModelBytes = st.Size()
	}
	if r.measure {
		// Loaded and timed twice, the lesser kept: a slow spell of the
		// machine through one load's rounds (as the profile retimes a
		// variant) should not cost a round of training.
		pt.MeasuredLatencyUs = math.Inf(1)
		for range 2 {
			us, mem, err := profile.MeasuredFile(mf, r.eng, r.job.Target.Batch, searchTimingDur)
			if err != nil {
				return nil, err
			}
			pt.MeasuredLatencyUs, pt.MeasuredMemory = min(pt.MeasuredLatencyUs, us), int64(mem)
		}
		pt.PredictionError = pt.PredictedLatencyUs/pt.MeasuredLatencyUs - 1
	}
	return sum, nil
}

// searchSetup is what a search knows before its rounds: the profile
// (measured here and written into dir, or the recipe's), the budget, the
// dense model's accuracies and each setting's one-shot cost (by the
// cluster's workers when workers is not nil).
func searchSetup(job *recipes.Job, dense *checkpoint.File, densePath string, eng compute.Engine, dir string, workers costEvaluator, log hclog.Logger) (*Search, *profile.Profile, profile.Loss, error) {
	t := job.Target
	var loss profile.Loss
	p, here, err := targetProfile(job, dense, densePath, eng, dir, log)
	if err != nil {
		return nil, nil, loss, err
	}
	s := &Search{Batch: t.Batch, Threads: t.Threads, MaxAccuracyDrop: t.MaxAccuracyDrop, Profile: t.Profile, ProfiledHere: here, Chosen: -1}
	if here && dir != "" {
		s.Profile = filepath.Join(dir, ProfileFile)
	}
	s.DenseLatencyUs = p.DenseUs
	s.BudgetUs, s.BudgetBytes, s.BudgetMemory = t.LatencyUs, int64(t.ModelBytes), int64(t.MemoryBytes)
	s.DenseMemory = int64(p.DenseMemory)
	if s.BudgetMemory > 0 && !p.HasMemory() {
		return nil, nil, loss, job.Errorf("target.memory_bytes", "the profile %s has no memory tables (measured by an older lathe): measure it again", t.Profile)
	}
	if t.LatencyFraction > 0 {
		s.BudgetUs = t.LatencyFraction * p.DenseUs
	}
	val, test, err := targetSplits(job)
	if err != nil {
		return nil, nil, loss, err
	}
	if s.DenseValAccuracy, err = fileAccuracy(dense, eng, val); err != nil {
		return nil, nil, loss, err
	}
	if s.DenseTestAccuracy, err = fileAccuracy(dense, eng, test); err != nil {
		return nil, nil, loss, err
	}
	s.DenseBytes = int64(dense.Bytes) // as a model file (an ONNX model's import)
	log.Info("dense model", "path", densePath, "latency_us", p.DenseUs, "memory", s.DenseMemory, "val_accuracy", s.DenseValAccuracy, "budget_us", s.BudgetUs, "budget_bytes", s.BudgetBytes, "budget_memory", s.BudgetMemory)
	eval := workers
	if eval == nil {
		eval = evalCostsHere(dense, val, log)
	}
	loss, err = searchLoss(dense, p, eval, log)
	return s, p, loss, err
}

// TargetDryRun prints what a target search's first round would train —
// the solver's settings and their predicted latency, bytes and one-shot
// loss — from the recipe's dense model file, profiling it here unless the
// recipe gives a profile; it trains nothing and writes nothing. Without a
// model file it says the settings come after the dense model is trained.
func TargetDryRun(w io.Writer, job *recipes.Job, log hclog.Logger) error {
	t := job.Target
	if t == nil {
		return nil
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if job.Model.File == "" {
		fmt.Fprintln(w, "target: the settings are chosen once the dense model is trained (give model.file to see them now)")
		return nil
	}
	dense, err := onnx.ReadModelWith(job.Model.File, importOptions(job, job.Model))
	if err != nil {
		return job.Errorf("model.file", "%v", err)
	}
	eng := cpu.New(cpu.Options{Threads: t.Threads, Logger: hclog.NewNullLogger(), Spin: infer.Spin})
	s, p, loss, err := searchSetup(job, dense, job.Model.File, eng, "", nil, log)
	if err != nil {
		return err
	}
	sol, err := p.Solve(loss, s.budget())
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "target: dense %.1f µs, %d bytes, %d bytes of memory, validation %.2f %%; budget %.1f µs, %d bytes, %d bytes of memory (0: none)\n",
		p.DenseUs, s.DenseBytes, s.DenseMemory, 100*s.DenseValAccuracy, s.BudgetUs, s.BudgetBytes, s.BudgetMemory)
	fmt.Fprintf(w, "first round (%s, met %v): keep %v, formats %v, int8 %v\n  predicted %.1f µs, %.0f bytes, %.0f bytes of memory, one-shot loss %.2f pp\n",
		sol.Method, sol.Met, sol.Config.Keep, sol.Config.Format, sol.Config.Int8, sol.PredictedUs, sol.PredictedBytes, sol.PredictedMemory, 100*sol.Loss)
	return nil
}

// denseModel is the search's dense model file: the recipe's model file,
// or one trained first in <run-dir>/dense with the recipe's model, data and
// optimizer (kept when a finished one is there).
func denseModel(ctx context.Context, job *recipes.Job, opts Options, dir string, log hclog.Logger) (string, error) {
	if job.Model.File != "" {
		return job.Model.File, nil
	}
	ddir := filepath.Join(dir, "dense")
	path := filepath.Join(ddir, rundir.ModelFile)
	if _, err := os.Stat(filepath.Join(ddir, rundir.SummaryFile)); err == nil {
		log.Info("dense model already trained", "path", path)
		return path, nil
	}
	dj := *job
	dj.Name, dj.Target, dj.Teacher, dj.Distill = job.Name+"-dense", nil, nil, nil
	if job.Target.DenseEpochs > 0 {
		dj.Epochs = job.Target.DenseEpochs
	}
	do := opts
	do.RunDir, do.Logger = ddir, log.Named("dense")
	if _, err := Execute(ctx, &dj, do); err != nil {
		return "", fmt.Errorf("run: target: the dense model: %w", err)
	}
	return path, nil
}

// targetProfile is the search's profile: the recipe's (measured
// elsewhere: used as written, at its batch and threads), or measured here
// and written to <run-dir>/profile.json.
func targetProfile(job *recipes.Job, dense *checkpoint.File, densePath string, eng compute.Engine, dir string, log hclog.Logger) (*profile.Profile, bool, error) {
	t := job.Target
	if t.Profile != "" {
		p, err := profile.Read(t.Profile)
		if err != nil {
			return nil, false, job.Errorf("target.profile", "%v", err)
		}
		if p.Batch != t.Batch || p.Threads != t.Threads {
			return nil, false, job.Errorf("target.profile", "%s was measured at batch %d on %d threads; the target is batch %d on %d", t.Profile, p.Batch, p.Threads, t.Batch, t.Threads)
		}
		return p, false, nil
	}
	start := time.Now()
	p, err := profile.Measure(dense, eng, profile.Options{Batch: t.Batch, Widths: t.Widths, Formats: t.Formats, Precisions: t.Precisions, Model: densePath,
		Progress: func(done, total int, v profile.Variant) {
			if done == total || done%max(1, total/5) == 0 {
				log.Info("profiling", "variants", done, "of", total, "seconds", int(time.Since(start).Seconds()))
			}
		}})
	if err != nil {
		return nil, false, job.Errorf("target", "%v", err)
	}
	if dir == "" { // a dry run writes nothing
		return p, true, nil
	}
	return p, true, p.Write(filepath.Join(dir, ProfileFile))
}

// targetSplits loads the job's data as a run splits it.
func targetSplits(job *recipes.Job) (val, test *data.Set, err error) {
	_, val, test, _, err = splits(job)
	if err == nil && val == nil {
		err = job.Errorf("validation", "the target search measures what each setting costs on the validation split; give it samples")
	}
	return val, test, err
}

// fileAccuracy is a model file's accuracy on a set, in the runtime.
func fileAccuracy(f *checkpoint.File, eng compute.Engine, set *data.Set) (float64, error) {
	m, err := infer.Load(f, eng)
	if err != nil {
		return 0, err
	}
	return infer.Accuracy(m, set, 256)
}

// roundJob is a round's recipe: the search's job fine-tuning the dense
// model file with the configuration's policies — each thinned group's
// channels pruned by dependency groups (a linear layer's: its rows), each sparse layer by magnitude
// and each 2:4 one by N:M, over the first half of the epochs (on Zhu &
// Gupta's schedule), and quantization-aware training of every weight and
// weighted layer's input at 8 bits when the configuration runs integer
// kernels; a recipe distilling does so from the dense model.
func roundJob(job *recipes.Job, densePath string, dense *model.Model, p *profile.Profile, c profile.Config, round int) (*recipes.Job, error) {
	rj := *job
	rj.Name, rj.Target = fmt.Sprintf("%s-round-%d", job.Name, round), nil
	rj.Model = recipes.Model{File: densePath}
	rj.Prune, rj.Quantize = nil, nil
	if job.Distill != nil {
		rj.Teacher = &recipes.Teacher{File: densePath, Count: 1}
	}
	window := func(pb recipes.Prune) recipes.Prune {
		pb.FromEpoch, pb.ToEpoch = 0, max(float64(job.Epochs)/2, 0.25)
		pb.EveryEpochs = min(0.25, pb.ToEpoch/4)
		return pb
	}
	byTarget := map[string][]string{} // "method/target" → layers
	var order []string
	add := func(key, layer string) {
		if _, ok := byTarget[key]; !ok {
			order = append(order, key)
		}
		byTarget[key] = append(byTarget[key], layer)
	}
	kind := map[string]string{}
	for _, l := range p.Layers {
		kind[l.Name] = l.Kind
	}
	for g, keep := range c.Keep {
		if keep < 1 {
			// A convolution's channels with all that depends on them; a
			// linear layer's neurons (its readers' columns go with them
			// when the model is thinned).
			producer, gran := p.Groups[g].Producers[0], "groups"
			if kind[producer] == "linear" {
				gran = "rows"
			}
			add("structured/"+gran+"/"+strconv.FormatFloat(1-keep, 'g', -1, 64), producer)
		}
	}
	names := make([]string, 0, len(c.Format))
	for name := range c.Format {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		switch f := c.Format[name]; {
		case f == profile.NM24:
			add("nm/", name)
		case strings.HasPrefix(f, "sparse-"):
			add("magnitude/"+strings.TrimPrefix(f, "sparse-"), name)
		}
	}
	for _, key := range order {
		method, target, _ := strings.Cut(key, "/")
		pb := recipes.NewPrune(method)
		pb.Layers = byTarget[key]
		if method == "structured" {
			pb.Granularity, target, _ = strings.Cut(target, "/")
			pb.Norm = "l2"
		}
		if target != "" {
			v, err := strconv.ParseFloat(target, 64)
			if err != nil {
				return nil, err
			}
			pb.Target = v
		}
		rj.Prune = append(rj.Prune, window(pb))
	}
	if c.Int8 {
		q := recipes.NewQuantize()
		q.Bits, q.Activations = 8, 8
		q.FoldBatchNorms = len(dense.Net.FoldPairs()) > 0 // batch norms folded into their convolutions as they quantize
		for _, w := range dense.Weights() {
			q.Layers = append(q.Layers, w.Name)
		}
		for name, bits := range c.Bits {
			if bits != 8 {
				if q.LayerBits == nil {
					q.LayerBits = map[string]int{}
				}
				q.LayerBits[name] = bits
			}
		}
		rj.Quantize = &q
	}
	// The recipe as a user would write it, read back: every default
	// filled and checked as any recipe is.
	back, err := recipes.Parse(rj.HCL(), rj.Name+".hcl", nil)
	if err != nil {
		return nil, fmt.Errorf("run: target round %d's recipe: %w", round, err)
	}
	back.File = job.File
	return back, nil
}

// choose picks the point that met the budget and the accuracy bound with
// the best validation accuracy; with none, the closest to the budget (the
// least of the largest of latency/budget, bytes/budget and
// memory/budget).
func choose(s *Search) (int, bool) {
	best, met := -1, false
	b := s.budget()
	cost := func(p SearchPoint) float64 { return b.Cost(p.latency(), float64(p.ModelBytes), p.memory()) }
	for i, p := range s.Points {
		switch {
		case p.Met && (!met || p.ValAccuracy > s.Points[best].ValAccuracy):
			best, met = i, true
		case !met && (best < 0 || cost(p) < cost(s.Points[best])):
			best = i
		}
	}
	return best, met
}

// writeSearch writes search.json and pareto.csv (each point, and whether
// no other point is at least as fast, as small in file and memory and as
// accurate, and better in one).
func writeSearch(dir string, s *Search, job *recipes.Job) error {
	if err := rundir.WriteJSON(filepath.Join(dir, SearchFile), s); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, ParetoFile))
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	w := csv.NewWriter(f)
	w.Write([]string{"round", "predicted_latency_us", "measured_latency_us", "model_bytes", "predicted_memory_bytes", "measured_memory_bytes", "val_accuracy", "test_accuracy", "met", "pareto"})
	for i, p := range s.Points {
		front := true
		for j, q := range s.Points {
			if j != i && q.latency() <= p.latency() && q.ModelBytes <= p.ModelBytes && q.memory() <= p.memory() && q.ValAccuracy >= p.ValAccuracy &&
				(q.latency() < p.latency() || q.ModelBytes < p.ModelBytes || q.memory() < p.memory() || q.ValAccuracy > p.ValAccuracy) {
				front = false
			}
		}
		w.Write([]string{strconv.Itoa(p.Round), fmt.Sprintf("%.2f", p.PredictedLatencyUs), fmt.Sprintf("%.2f", p.MeasuredLatencyUs),
			strconv.FormatInt(p.ModelBytes, 10), fmt.Sprintf("%.0f", p.PredictedMemory), strconv.FormatInt(p.MeasuredMemory, 10),
			fmt.Sprintf("%.6f", p.ValAccuracy), fmt.Sprintf("%.6f", p.TestAccuracy), strconv.FormatBool(p.Met), strconv.FormatBool(front)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return fmt.Errorf("run: %w", err)
	}
	return f.Close()
}
