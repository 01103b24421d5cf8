package run

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

// coordinatorRun is the coordinator of a cluster run (Options.Cluster):
// it keeps the state, applies the policies and writes the files, while
// the workers' replicas compute the gradients of each step.
type coordinatorRun struct {
	c           *cluster.Coordinator
	tobj        *storeFiles // the teachers' model files for the cluster's store, made once
	tlogitsFile []byte      // offline distillation's logits file, for the replicas
	postFile    []byte      // the post-trained model file, for the replicas
	par         *cluster.Replica
}

func (c *coordinatorRun) postTrain(ctx context.Context, job *recipes.Job, opts Options, log hclog.Logger) (err error) {
	c.postFile, _, err = postTrainOn(ctx, job, opts, log)
	return err
}

func (*coordinatorRun) ownsDir() bool                { return true }
func (*coordinatorRun) oneThread() bool              { return true }
func (*coordinatorRun) resumeFile() *checkpoint.File { return nil }

// teacherFiles are the teachers' model files for the cluster's store.
func (c *coordinatorRun) teacherFiles(st *jobRun) (*storeFiles, error) {
	if c.tobj == nil {
		var err error
		if c.tobj, err = teacherObjects(st.job, st.teachers); err != nil {
			return nil, err
		}
	}
	return c.tobj, nil
}

// teacherLogits splits the logits across the workers, each a range of
// whole batches, with one thread as here: the same bits.
func (c *coordinatorRun) teacherLogits(ctx context.Context, st *jobRun) ([]float32, error) {
	t0 := time.Now()
	tf, err := c.teacherFiles(st)
	if err != nil {
		return nil, teacherLogitsError(err)
	}
	tlogits, err := clusterTeacherLogits(ctx, st.job, st.opts, tf, st.train, st.log)
	if err != nil {
		return nil, teacherLogitsError(err)
	}
	f, err := writeTeacherLogits(st, tlogits, t0)
	if err != nil {
		return nil, err
	}
	if c.tlogitsFile, err = checkpoint.Encode(f); err != nil {
		return nil, err
	}
	return tlogits, nil
}

// attach sends the phase to the workers and trains on the coordinator's
// replica; workers that register while the phase runs join it at a step
// ahead, from this trainer's state there.
func (c *coordinatorRun) attach(ctx context.Context, st *jobRun, cfg *trainer.Config, ckpt *rundir.Checkpointer, tr func() *trainer.Trainer) (func(), error) {
	tf, err := c.teacherFiles(st)
	if err != nil {
		return nil, err
	}
	if c.par, err = startPhase(ctx, st.job, st.opts, tf, st.rp, c.tlogitsFile, c.postFile); err != nil {
		return nil, err
	}
	cfg.Parallel = c.par
	cfg.ShareState = func(sn *trainer.Snapshot) error {
		f, err := ckpt.File(sn, tr().Model())
		if err != nil {
			return err
		}
		b, err := checkpoint.Encode(f)
		if err != nil {
			return err
		}
		return st.opts.Cluster.Admit(sn.Step, b)
	}
	c.par.Joinable()
	c.par.SetStateCodec(cluster.StateCodec{Decode: func(b []byte) (*trainer.Snapshot, error) {
		return rundir.ReadSyncState(b, tr().Model())
	}})
	return st.opts.Cluster.EndPhase, nil
}

// evaluateAll makes each cell a task for a worker, from a model file of
// the weights as they are at the analysis; the table then goes to the
// replicas, which wait for it.
func (c *coordinatorRun) evaluateAll(ctx context.Context, st *jobRun, tr *trainer.Trainer) func([]trainer.SensitivityRow) (float64, []float64, error) {
	return func(cells []trainer.SensitivityRow) (float64, []float64, error) {
		base, accs, err := clusterSensitivity(ctx, st.job, st.opts, tr.Model(), cells, st.log)
		if err == nil {
			b, _ := json.Marshal(sensitivityResult{Baseline: base, Accuracies: accs})
			st.opts.Cluster.Share("sensitivity", b)
		}
		return base, accs, err
	}
}

func (c *coordinatorRun) summarize(sum *rundir.Summary, tr *trainer.Trainer) {
	sum.Cluster = clusterSummary(c.c, c.par, sum.Batch)
	sum.Cluster.SyncEvery = c.par.SyncEvery()
	sum.Cluster.GradientBytes = 4 * tr.Model().NumParams()
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

// ReduceEveryStep, as Options.SyncEvery, makes the coordinator a replica
// that takes part in every step's reduction and applies the whole update
// itself (the mode before the coordinator followed the workers).
const ReduceEveryStep = -1

// syncSpacing is the phase's PhaseSpec.SyncEvery for Options.SyncEvery.
func syncSpacing(opt int) (int, error) {
	switch {
	case opt == 0:
		return cluster.DefaultSyncEvery, nil
	case opt == ReduceEveryStep:
		return 0, nil
	case opt < 0:
		return 0, fmt.Errorf("run: sync every %d steps: a number of steps ≥ 1 (0: %d; ReduceEveryStep: the coordinator reduces every step)", opt, cluster.DefaultSyncEvery)
	}
	return opt, nil
}

// startPhase sends the phase to the cluster's workers with the files its
// replicas start from, and returns the coordinator's replica.
func startPhase(ctx context.Context, job *recipes.Job, opts Options, teachers *storeFiles, rp *resumePoint, logits, post []byte) (*cluster.Replica, error) {
	shards, err := microShards(job.Batch, opts.MicroShards)
	if err != nil {
		return nil, job.Errorf("batch", "%v", err)
	}
	syncEvery, err := syncSpacing(opts.SyncEvery)
	if err != nil {
		return nil, err
	}
	spec := cluster.PhaseSpec{Name: job.Name, Recipe: job.HCL(), File: job.File, MicroShards: shards, SamplesPerShard: job.Batch / shards, SyncEvery: syncEvery}
	files := maps.Clone(teachers.files)
	if files == nil {
		files = map[string][]byte{}
	}
	spec.Teachers = teachers.names
	if logits != nil {
		spec.TeacherLogits = cluster.Token(job.Name) + ".teacher-logits.arrow"
		files[spec.TeacherLogits] = logits
	}
	if post != nil {
		spec.PostTrained = cluster.Token(job.Name) + ".post-trained.arrow"
		files[spec.PostTrained] = post
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

// clusterSummary gathers the cluster's counts at the end of a phase.
func clusterSummary(c *cluster.Coordinator, par *cluster.Replica, batch int) *rundir.ClusterSummary {
	c.CompareDigests()
	ms, rs := c.Stats(), par.Stats()
	s := &rundir.ClusterSummary{Workers: ms.MaxWorkers, WorkersJoined: ms.WorkersJoined, WorkersLost: ms.WorkersLost, WorkersFailed: ms.WorkersFailed, Restarts: ms.Restarts, StepsReplanned: rs.Redone, OptimizerStatesMoved: rs.StateServed,
		Rebalances: ms.Rebalances, Shares: c.Shares(), DigestsCompared: ms.DigestsCompared, DigestMismatches: ms.DigestMismatches, MessagesRejected: ms.MessagesRejected, WorkersRefused: ms.Refused, MicroShards: par.MicroShards()}
	s.DataPlane, _ = c.DataPlane()
	if rs.SteadySteps > 0 && rs.SteadySeconds > 0 {
		s.SteadySamplesPerSecond = float64(rs.SteadySteps*int64(batch)) / rs.SteadySeconds
		s.SteadyFromStep = int(rs.SteadyFrom)
	}
	var n int
	for _, w := range c.Workers() {
		if w.Samples > 0 {
			if s.Samples == nil {
				s.Samples = map[string]int64{}
			}
			s.Samples[w.Name] = w.Samples
		}
		if w.StepSeconds > 0 {
			if s.StepTime == nil {
				s.StepTime = map[string]rundir.StepTime{}
			}
			c, wt := w.ComputeSeconds/w.StepSeconds, w.WaitSeconds/w.StepSeconds
			s.StepTime[w.Name] = rundir.StepTime{Seconds: w.StepSeconds, Compute: c, Wait: wt, Exchange: max(0, 1-c-wt), CPU: w.CPUSeconds / w.StepSeconds}
		}
		if w.Step > 0 && w.BytesSent > 0 {
			s.BytesSentPerStep += float64(w.BytesSent) / float64(w.Step)
			s.BytesReceivedPerStep += float64(w.BytesReceived) / float64(w.Step)
			s.BrokerBytesPerStep += float64(w.NATSBytesOut) / float64(w.Step)
			s.PeerBytesPerStep += float64(w.PeerBytesSent) / float64(w.Step)
			n++
		}
	}
	if n > 0 {
		for _, v := range []*float64{&s.BytesSentPerStep, &s.BytesReceivedPerStep, &s.BrokerBytesPerStep, &s.PeerBytesPerStep} {
			*v /= float64(n)
		}
	}
	return s
}
