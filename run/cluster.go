package run

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/trainer"
)

// ClusterSummary is summary.json's account of a cluster run's student
// phase.
type ClusterSummary struct {
	Workers        int   `json:"workers"`        // the most that took part at once
	WorkersJoined  int   `json:"workers_joined"` // admitted while the phase ran
	WorkersLost    int   `json:"workers_lost"`
	WorkersFailed  int   `json:"workers_quarantined"` // left out after reporting a failure, e.g. a NaN or Inf
	StepsReplanned int64 `json:"steps_replanned"`
	// OptimizerStatesMoved counts the chunks whose optimizer state the
	// coordinator sent a worker that took the chunk over (after a
	// membership change or a rebuilt model); each worker keeps its own
	// chunk's state otherwise.
	OptimizerStatesMoved int64 `json:"optimizer_states_moved"`
	// Rebalances are the re-splits of the step by the workers' measured
	// speeds; Shares the last split (micro-shards per worker, absent when
	// equal).
	Rebalances int `json:"rebalances"`
	// DigestsCompared counts the workers' weight digests found equal to
	// the coordinator's, DigestMismatches those that differed (each
	// leaves its worker out).
	DigestsCompared  int            `json:"digests_compared"`
	DigestMismatches int            `json:"digest_mismatches"`
	Shares           map[string]int `json:"shares,omitempty"`
	// MessagesRejected counts the messages the coordinator and the workers
	// refused (a bad signature, a replay, a length or step out of range).
	MessagesRejected int64 `json:"messages_rejected"`
	// WorkersRefused are the registrations turned away (a worker without
	// the job's secret, say), with the reason.
	WorkersRefused []cluster.Refusal `json:"workers_refused,omitempty"`
	MicroShards    int               `json:"micro_shards"`
	// Per worker and step, mean over the workers that trained: data bytes
	// published and received (reduce-scatter and all-gather), and the
	// gradient's float32 size they compare with.
	BytesSentPerStep     float64 `json:"bytes_sent_per_step"`
	BytesReceivedPerStep float64 `json:"bytes_received_per_step"`
	GradientBytes        int     `json:"gradient_bytes"`
}

// parallel turns a replica into the trainer's interface (nil stays nil).
func parallel(r *cluster.Replica) trainer.Parallel {
	if r == nil {
		return nil
	}
	return r
}

// microShards is the number of micro-shards for a batch: the requested
// count, or 8 (or the largest divisor of the batch below 8).
func microShards(batch, want int) (int, error) {
	if want > 0 {
		if batch%want != 0 {
			return 0, fmt.Errorf("run: %d micro-shards do not divide the batch of %d", want, batch)
		}
		return want, nil
	}
	for k := 8; k > 1; k-- {
		if batch%k == 0 {
			return k, nil
		}
	}
	return 1, nil
}

// startPhase sends the phase to the cluster's workers with the files its
// replicas start from, and returns the coordinator's replica.
func startPhase(ctx context.Context, job *recipes.Job, opts Options, teachers *storeFiles, rp *resumePoint, logits []byte) (*cluster.Replica, error) {
	shards, err := microShards(job.Batch, opts.MicroShards)
	if err != nil {
		return nil, job.Errorf("batch", "%v", err)
	}
	spec := cluster.PhaseSpec{Name: job.Name, Recipe: job.HCL(), File: job.File, MicroShards: shards, SamplesPerShard: job.Batch / shards}
	files := maps.Clone(teachers.files)
	if files == nil {
		files = map[string][]byte{}
	}
	spec.Teachers = teachers.names
	if logits != nil {
		spec.TeacherLogits = cluster.Token(job.Name) + ".teacher-logits.arrow"
		files[spec.TeacherLogits] = logits
	}
	if rp != nil {
		b, err := os.ReadFile(rp.path)
		if err != nil {
			return nil, fmt.Errorf("run: %w", err)
		}
		spec.Resume = cluster.Token(job.Name) + ".resume.arrow"
		spec.StartStep = rp.state.Snapshot.Step
		files[spec.Resume] = b
	}
	// The dataset goes too, so that a worker needs none of its own (and
	// every replica reads the very bytes the coordinator does).
	if spec.Data, err = datasetObjects(job, opts.DataDir, files); err != nil {
		return nil, err
	}
	if err := opts.Cluster.WaitWorkers(ctx, 1); err != nil {
		return nil, err
	}
	return opts.Cluster.Phase(ctx, spec, files)
}

// storeFiles are files for the job's object store, and the names of
// those a spec lists, in order.
type storeFiles struct {
	files map[string][]byte
	names []string
}

// teacherObjects are the teachers' model files as store objects, made
// once for the logits tasks and the phase.
func teacherObjects(job *recipes.Job, teachers []*model.Model) (*storeFiles, error) {
	sf := &storeFiles{files: map[string][]byte{}}
	for k, tm := range teachers {
		mf, err := ExportModel(tm, fmt.Sprintf("%s-teacher-%d", job.Name, k+1), job.Dataset)
		if err != nil {
			return nil, err
		}
		b, err := checkpoint.Encode(mf)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("%s.teacher-%d.arrow", cluster.Token(job.Name), k+1)
		sf.files[name] = b
		sf.names = append(sf.names, name)
	}
	return sf, nil
}

// datasetObjects adds the dataset's files (from dataDir, or where it is
// installed) to files as store objects and returns their names.
func datasetObjects(job *recipes.Job, dataDir string, files map[string][]byte) ([]string, error) {
	dir := dataDir
	if dir == "" {
		var err error
		if dir, err = data.DefaultDir(job.Dataset); err != nil {
			return nil, err
		}
	}
	var names []string
	for _, f := range data.Files() {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, fmt.Errorf("run: the dataset to send the workers: %w", err)
		}
		name := cluster.Token(job.Name) + ".data/" + f
		files[name] = b
		names = append(names, name)
	}
	return names, nil
}

// datasetDir is where a worker reads a job's dataset: dataDir when given,
// else a temporary directory holding the coordinator's copy (objects)
// that cleanup removes.
func datasetDir(dataDir string, objects []string, files map[string][]byte, log hclog.Logger) (dir string, cleanup func(), err error) {
	if dataDir != "" || len(objects) == 0 {
		return dataDir, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "lathe-data-")
	if err != nil {
		return "", nil, fmt.Errorf("run: %w", err)
	}
	for _, n := range objects {
		if err := os.WriteFile(filepath.Join(tmp, path.Base(n)), files[n], 0o644); err != nil {
			os.RemoveAll(tmp)
			return "", nil, fmt.Errorf("run: %w", err)
		}
	}
	log.Debug("training on the dataset the coordinator sent", "files", len(objects))
	return tmp, func() { os.RemoveAll(tmp) }, nil
}

// ReplicaPhase runs a cluster phase as one worker's replica: the recipe
// and files come from the coordinator, the data from dataDir (or where the
// dataset is installed). It is a cluster.PhaseFunc.
func ReplicaPhase(dataDir string, log hclog.Logger) cluster.PhaseFunc {
	return replicaPhase(dataDir, log, nil, nil, false)
}

// ReplicaPhaseOn is ReplicaPhase for a worker whose micro-shard gradients
// are computed on dev (a GPU). A phase the device cannot compute fails —
// or, with auto (the worker's --device auto), runs on the CPU.
func ReplicaPhaseOn(dataDir string, log hclog.Logger, dev compute.Device, auto bool) cluster.PhaseFunc {
	return replicaPhase(dataDir, log, nil, dev, auto)
}

// replicaPhase is ReplicaPhase with extra policies (the tests inject faults)
// and a device.
func replicaPhase(dataDir string, log hclog.Logger, extra []trainer.Policy, dev compute.Device, auto bool) cluster.PhaseFunc {
	return func(ctx context.Context, spec cluster.PhaseSpec, files map[string][]byte, par *cluster.Replica) error {
		job, err := recipes.Parse(spec.Recipe, spec.File, nil)
		if err != nil {
			return fmt.Errorf("run: the phase's recipe: %w", err)
		}
		if !slices.Equal(recipeLines(job.HCL()), recipeLines(spec.Recipe)) {
			return fmt.Errorf("run: the phase's recipe %s does not read back the same here (another lathe version?)", spec.File)
		}
		r := &replicaOpts{par: par, deviceAuto: auto}
		for _, name := range spec.Teachers {
			f, err := checkpoint.Decode(files[name])
			if err != nil {
				return fmt.Errorf("run: teacher %s: %w", name, err)
			}
			tm, _, err := LoadModel(f)
			if err != nil {
				return fmt.Errorf("run: teacher %s: %w", name, err)
			}
			r.teachers = append(r.teachers, tm)
		}
		if spec.Resume != "" {
			if r.resume, err = checkpoint.Decode(files[spec.Resume]); err != nil {
				return fmt.Errorf("run: the phase's checkpoint: %w", err)
			}
		}
		if spec.TeacherLogits != "" {
			f, err := checkpoint.Decode(files[spec.TeacherLogits])
			if err != nil {
				return fmt.Errorf("run: the phase's teacher logits: %w", err)
			}
			if r.teacherLogits, err = logitsFrom(f); err != nil {
				return err
			}
		}
		dir, cleanup, err := datasetDir(dataDir, spec.Data, files, log)
		if err != nil {
			return err
		}
		defer cleanup()
		_, _, err = execute(ctx, job, Options{DataDir: dir, Logger: log, replica: r, Policies: extra, Device: dev})
		return err
	}
}

// clusterSummary gathers the cluster's counts at the end of a phase.
func clusterSummary(c *cluster.Coordinator, par *cluster.Replica) *ClusterSummary {
	c.CompareDigests()
	ms, rs := c.Stats(), par.Stats()
	s := &ClusterSummary{Workers: ms.MaxWorkers, WorkersJoined: ms.WorkersJoined, WorkersLost: ms.WorkersLost, WorkersFailed: ms.WorkersFailed, StepsReplanned: rs.Redone, OptimizerStatesMoved: rs.StateServed,
		Rebalances: ms.Rebalances, Shares: c.Shares(), DigestsCompared: ms.DigestsCompared, DigestMismatches: ms.DigestMismatches, MessagesRejected: ms.MessagesRejected, WorkersRefused: ms.Refused, MicroShards: par.MicroShards()}
	var n int
	for _, w := range c.Workers() {
		if w.Step > 0 && w.BytesSent > 0 {
			s.BytesSentPerStep += float64(w.BytesSent) / float64(w.Step)
			s.BytesReceivedPerStep += float64(w.BytesReceived) / float64(w.Step)
			n++
		}
	}
	if n > 0 {
		s.BytesSentPerStep /= float64(n)
		s.BytesReceivedPerStep /= float64(n)
	}
	return s
}

// recipeLines are a resolved recipe's lines without comments and
// indentation, for comparing two renderings.
func recipeLines(b []byte) []string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// TeacherLogitsFile holds an offline distillation's teacher logits in the
// run directory.
const TeacherLogitsFile = "teacher-logits.arrow"

// logitsState is a teacher-logits file's state document.
type logitsState struct {
	Dataset  string   `json:"dataset"`
	Set      string   `json:"set"` // the training split's name
	Samples  int      `json:"samples"`
	Classes  int      `json:"classes"`
	Teachers []string `json:"teachers,omitempty"` // weights digests of the teachers' model files
}

// logitsFile is the Arrow file of the teachers' logits for set.
func logitsFile(job *recipes.Job, set *data.Set, logits []float32, teachers []string) *checkpoint.File {
	st, _ := json.Marshal(logitsState{Dataset: job.Dataset, Set: set.Name, Samples: set.Len(), Classes: set.Classes, Teachers: teachers})
	return &checkpoint.File{Kind: checkpoint.KindLogits, Job: job.Name, Version: Version, State: st,
		Tensors: []*checkpoint.Tensor{{Name: "logits", Role: checkpoint.RoleState, Shape: []int{set.Len(), set.Classes}, Data: logits}}}
}

// logitsFrom reads the logits back from their file.
func logitsFrom(f *checkpoint.File) ([]float32, error) {
	t := f.Tensor("logits")
	if f.Kind != checkpoint.KindLogits || t == nil || len(t.Shape) != 2 || len(t.Data) != t.Shape[0]*t.Shape[1] {
		return nil, fmt.Errorf("run: not a teacher-logits file (kind %q)", f.Kind)
	}
	return t.Data, nil
}
