package rundir

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/trainer"
)

// StatusFile is rewritten (atomically) at least every StatusEvery while a
// run trains, so that scripts and people can see where it stands.
const StatusFile = "status.json"

// StatusEvery is the longest a run leaves status.json unchanged.
var StatusEvery = 2 * time.Second

// Status is status.json.
type Status struct {
	Job              string  `json:"job"`
	State            string  `json:"state"` // training, done, failed, interrupted
	Epoch            int     `json:"epoch"` // 1-based
	Epochs           int     `json:"epochs"`
	StepInEpoch      int     `json:"step_in_epoch"`
	StepsPerEpoch    int     `json:"steps_per_epoch"`
	Step             int64   `json:"step"` // steps done over the run
	SamplesSeen      int64   `json:"samples_seen"`
	LastLoss         float64 `json:"last_loss"`
	SamplesPerSecond float64 `json:"samples_per_second"` // this epoch so far
	// ETASeconds is the training time left in this run (this epoch's rest
	// and the epochs after it at this epoch's speed; evaluations not
	// counted).
	ETASeconds float64        `json:"eta_seconds"`
	Updated    time.Time      `json:"updated"`
	Workers    []WorkerStatus `json:"workers,omitempty"` // cluster runs
	Error      string         `json:"error,omitempty"`
}

// WorkerStatus is one worker in status.json.
type WorkerStatus struct {
	Name   string `json:"name"`
	State  string `json:"state"` // ready, training, lost, failed
	Device string `json:"device"`
	Step   int64  `json:"step"`
	// SamplesPerSecond is what the worker itself computes, from its
	// heartbeats.
	SamplesPerSecond float64 `json:"samples_per_second"`
	// Capacity is its speed while computing, and Share the micro-shards of
	// each step it computes: the coordinator splits the step by capacity.
	Capacity float64 `json:"capacity_samples_per_second"`
	Share    int     `json:"share"`
	Error    string  `json:"error,omitempty"`
}

// StatusWriter keeps status.json current: on training progress (at most
// once a second) and on a timer, so that long evaluations and checkpoints
// refresh it too.
type StatusWriter struct {
	path    string
	batch   int
	cluster *cluster.Coordinator
	log     hclog.Logger

	mu      sync.Mutex
	st      Status
	written time.Time
	stop    chan struct{}
	done    chan struct{}
}

// StartStatus writes dir's status.json now and keeps it current until
// End; c, when set, supplies the cluster's workers.
func StartStatus(dir, job string, epochs, batch int, c *cluster.Coordinator, log hclog.Logger) *StatusWriter {
	w := &StatusWriter{path: filepath.Join(dir, StatusFile), batch: batch, cluster: c, log: log,
		st: Status{Job: job, State: "training", Epochs: epochs}, stop: make(chan struct{}), done: make(chan struct{})}
	w.write()
	go func() {
		defer close(w.done)
		t := time.NewTicker(StatusEvery / 2)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				w.write()
			}
		}
	}()
	return w
}

// Progress records a training step, writing when a second has passed.
func (w *StatusWriter) Progress(p trainer.Progress) {
	w.mu.Lock()
	w.st.Epoch, w.st.StepInEpoch, w.st.StepsPerEpoch = p.Epoch, p.Step, p.Steps
	w.st.Step = int64((p.Epoch-1)*p.Steps + p.Step)
	w.st.SamplesSeen = w.st.Step * int64(w.batch)
	w.st.LastLoss, w.st.SamplesPerSecond, w.st.ETASeconds = p.Loss, p.SamplesPerSec, p.ETA.Seconds()
	if p.SamplesPerSec > 0 {
		w.st.ETASeconds += float64((p.Epochs-p.Epoch)*p.Steps*w.batch) / p.SamplesPerSec
	}
	due := time.Since(w.written) >= time.Second
	w.mu.Unlock()
	if due {
		w.write()
	}
}

// End finishes the status as a run that returned err: done, interrupted
// (its context cancelled) or failed.
func (w *StatusWriter) End(ctx context.Context, err error) {
	switch {
	case err == nil:
		w.finish("done", nil)
	case ctx.Err() != nil:
		w.finish("interrupted", err)
	default:
		w.finish("failed", err)
	}
}

// finish writes the final state and stops the timer.
func (w *StatusWriter) finish(state string, err error) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	w.st.State = state
	if err != nil {
		w.st.Error = err.Error()
	}
	w.mu.Unlock()
	w.write()
}

func (w *StatusWriter) write() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.st.Updated = time.Now().UTC()
	w.st.Workers = nil
	if w.cluster != nil {
		for _, wi := range w.cluster.Workers() {
			w.st.Workers = append(w.st.Workers, WorkerStatus{Name: wi.Name, State: wi.State, Device: wi.Device, Step: wi.Step,
				SamplesPerSecond: wi.SamplesPerSecond, Capacity: wi.Capacity, Share: wi.Share, Error: wi.Error})
		}
	}
	b, _ := json.MarshalIndent(w.st, "", "  ")
	if err := checkpoint.WriteAtomic(w.path, append(b, '\n')); err != nil {
		w.log.Warn("status not written", "path", w.path, "error", err)
		return
	}
	w.written = time.Now()
}
