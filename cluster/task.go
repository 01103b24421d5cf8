package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
)

// TaskSpec is independent work the coordinator hands one worker: the
// job-parallel mode, beside data-parallel phases. Kinds: "run", a whole
// recipe run (one point of a sweep); "logits", a teacher's logits for a
// range of the training set (offline distillation), split across the
// workers; "sensitivity", one cell of a sensitivity analysis (a layer
// pruned to a sparsity, evaluated on the validation split); "calibrate",
// a range of a post-training calibration pass's batches (Lo, Hi); "cost",
// one setting of a target search (Cell), evaluated on the validation
// split.
type TaskSpec struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Recipe []byte `json:"recipe"` // resolved HCL
	File   string `json:"file"`   // the recipe's file name, for messages
	Bucket string `json:"bucket"`
	// Data are objects holding the dataset's files, as in PhaseSpec;
	// Inputs the task's other objects (a logits task's teacher files).
	Data   []string `json:"data,omitempty"`
	Inputs []string `json:"inputs,omitempty"`
	// Lo and Hi bound a logits task's samples.
	Lo int `json:"lo,omitempty"`
	Hi int `json:"hi,omitempty"`
	// Layer and Sparsity are a sensitivity task's cell: the layer pruned
	// alone to that sparsity (none: the weights as they are). A calibrate
	// task's Layer is the layer whose inputs it collects, Observed the
	// layers whose outputs it samples.
	Layer    string   `json:"layer,omitempty"`
	Sparsity float64  `json:"sparsity,omitempty"`
	Observed []string `json:"observed,omitempty"`
	// Cell is a cost task's setting, as the run package encodes it.
	Cell json.RawMessage `json:"cell,omitempty"`
}

// TaskResult is a worker's answer to a task, published on its
// lathe.J.w.W.done subject; its output files are objects it put in the
// job's store, signed with the job's secret.
type TaskResult struct {
	ID      string          `json:"id"`
	Error   string          `json:"error,omitempty"`
	Summary json.RawMessage `json:"summary,omitempty"`
	Files   []string        `json:"files,omitempty"` // objects: task-<id>/<relative path>
}

// TaskFunc runs a task on a worker and returns a summary (JSON) and its
// output files by relative path.
type TaskFunc func(ctx context.Context, spec TaskSpec, files map[string][]byte) (summary []byte, out map[string][]byte, err error)

// TaskOutcome is a finished task as the coordinator hands it back.
type TaskOutcome struct {
	Worker  string
	Error   string
	Summary json.RawMessage
	Files   map[string][]byte // by relative path
	Seconds float64
}

// TaskStats counts a job-parallel run's scheduling.
type TaskStats struct {
	Tasks     int            `json:"tasks"`
	Retried   int            `json:"retried"` // handed to another worker after theirs was lost
	PerWorker map[string]int `json:"per_worker"`
}

// taskObject is where a task's output file goes in the store.
func taskObject(id, rel string) string { return "task-" + Token(id) + "/" + rel }

// RunTasks hands the tasks to the ready workers — and, during a phase,
// to its members, which run them beside their replicas (waiting at a step
// boundary for what the tasks decide) — one at a time each, and
// calls done (from this goroutine) as each finishes, in the order they
// finish. files are put in the job's store first (the tasks name them in
// Data and Inputs). A worker lost while it runs a task gives it back to
// the queue; a task that fails on its worker is an outcome with its
// error, not retried. It returns when every task is done, or ctx ends.
func (c *Coordinator) RunTasks(ctx context.Context, tasks []TaskSpec, files map[string][]byte, done func(TaskSpec, TaskOutcome) error) (TaskStats, error) {
	st := TaskStats{Tasks: len(tasks), PerWorker: map[string]int{}}
	if err := c.putFiles(files); err != nil {
		return st, err
	}
	results := make(chan *nats.Msg, 64)
	sub, err := c.nc.ChanSubscribe("lathe."+c.job+".w.*.done", results)
	if err != nil {
		return st, fmt.Errorf("cluster: %w", err)
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)
	if err := c.nc.Flush(); err != nil {
		return st, fmt.Errorf("cluster: %w", err)
	}
	queue := slices.Clone(tasks)
	for i := range queue {
		queue[i].Bucket = c.bucket
	}
	type running struct {
		task  TaskSpec
		since time.Time
	}
	busy := map[string]running{} // worker → its task
	tick := time.NewTicker(HeartbeatEvery)
	defer tick.Stop()
	left := len(tasks)
	for left > 0 {
		// Hand out what is queued; take back the tasks of lost workers.
		c.mu.Lock()
		for name, r := range busy {
			if w := c.workers[name]; w == nil || w.State == "lost" || w.State == "failed" {
				c.log.Warn("a worker was lost while it ran a task; it goes to another", "worker", name, "task", r.task.ID)
				queue = append(queue, r.task)
				delete(busy, name)
				st.Retried++
			}
		}
		for _, name := range c.order {
			if len(queue) == 0 {
				break
			}
			w := c.workers[name]
			// During a phase its members take the tasks (beside their
			// replicas); a worker waiting to join it does not. Between
			// phases, the ready ones.
			eligible := w.State == "ready" && c.rep == nil || w.State == "training" && c.rep != nil && slices.Contains(c.members, name)
			if _, ok := busy[name]; ok || !eligible {
				continue
			}
			t := queue[0]
			queue = queue[1:]
			busy[name] = running{task: t, since: time.Now()}
			if w.State == "ready" {
				w.State = "task" // a phase's members run tasks beside their replica
			}
			c.log.Info("task handed out", "task", t.ID, "kind", t.Kind, "worker", name, "queued", len(queue))
			c.control(Control{Kind: "task", Members: []string{name}, Task: &t})
		}
		idle := len(busy) == 0
		c.mu.Unlock()
		if idle {
			// Nothing runs: wait for a worker.
			if err := c.WaitWorkers(ctx, 1); err != nil {
				return st, err
			}
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-tick.C:
		case m := <-results:
			from := subjectFrom(m.Subject)
			var res TaskResult
			r, ok := busy[from]
			err := c.l.check(m)
			if err == nil {
				err = json.Unmarshal(m.Data, &res)
			}
			if err == nil && (!ok || res.ID != r.task.ID) {
				err = fmt.Errorf("task %q is not the worker's", res.ID)
			}
			if err != nil {
				c.reject("task result", from, err)
				continue
			}
			out := TaskOutcome{Worker: from, Error: res.Error, Summary: res.Summary, Seconds: time.Since(r.since).Seconds()}
			if out.Error == "" {
				if out.Files, err = c.taskFiles(res); err != nil {
					out.Error = err.Error()
				}
			}
			delete(busy, from)
			c.mu.Lock()
			if w := c.workers[from]; w != nil && w.State == "task" {
				w.State = "ready"
			}
			c.mu.Unlock()
			st.PerWorker[from]++
			left--
			if err := done(r.task, out); err != nil {
				return st, err
			}
		}
	}
	return st, nil
}

// taskFiles fetches a task's output files and checks their signatures.
func (c *Coordinator) taskFiles(res TaskResult) (map[string][]byte, error) {
	obs, err := c.objectStore()
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	prefix := "task-" + Token(res.ID) + "/"
	for _, name := range res.Files {
		if len(name) <= len(prefix) || name[:len(prefix)] != prefix {
			return nil, fmt.Errorf("cluster: task %s: object %q is not the task's", res.ID, name)
		}
		b, err := getObject(obs, c.bucket, c.Secret, name)
		if err != nil {
			return nil, err
		}
		out[name[len(prefix):]] = b
		_ = obs.Delete(name)
	}
	return out, nil
}

// putFiles stores files in the job's object store, signed, skipping those
// this job stored with the same bytes already.
func (c *Coordinator) putFiles(files map[string][]byte) error {
	if len(files) == 0 {
		return nil
	}
	obs, err := c.objectStore()
	if err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		b := files[name]
		sum := sha256.Sum256(b)
		if c.stored[name] == sum {
			continue
		}
		if err := putObject(obs, c.Secret, name, b); err != nil {
			return err
		}
		c.stored[name] = sum
	}
	return nil
}

// runTask runs a task here and publishes its result: the output files
// go to the store first, signed with the job's secret.
func (w *Worker) runTask(ctx context.Context, prefix string, spec TaskSpec) {
	res := TaskResult{ID: spec.ID}
	err := func() error {
		if w.Task == nil {
			return errors.New("this worker runs no tasks")
		}
		files, err := w.fetch(spec.Bucket, spec.Inputs, spec.Data)
		if err != nil {
			return err
		}
		summary, out, err := w.Task(ctx, spec, files)
		if err != nil {
			return err
		}
		res.Summary = summary
		if len(out) == 0 {
			return nil
		}
		js, err := w.NC.JetStream()
		if err != nil {
			return fmt.Errorf("cluster: JetStream: %w", err)
		}
		obs, err := js.ObjectStore(spec.Bucket)
		if err != nil {
			return fmt.Errorf("cluster: object store %s: %w", spec.Bucket, err)
		}
		rels := make([]string, 0, len(out))
		for rel := range out {
			rels = append(rels, rel)
		}
		sort.Strings(rels)
		for _, rel := range rels {
			name := taskObject(spec.ID, rel)
			if err := putObject(obs, w.Secret, name, out[rel]); err != nil {
				return err
			}
			res.Files = append(res.Files, name)
		}
		return nil
	}()
	if err != nil {
		res.Error = err.Error()
		w.Log.Error("task failed", "task", spec.ID, "error", err)
	} else {
		w.Log.Info("task done", "task", spec.ID, "files", len(res.Files))
	}
	b, _ := json.Marshal(res)
	if err := w.l.publish(prefix+".done", nil, b); err != nil {
		w.Log.Error("task result not sent", "task", spec.ID, "error", err)
	}
	_ = w.NC.Flush()
}
