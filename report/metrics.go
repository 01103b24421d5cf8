package report

import (
	"math"
	"net/http"
	"path/filepath"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/rundir"
)

// ClusterView is what the metrics read of a cluster's coordinator
// (*cluster.Coordinator has it).
type ClusterView interface {
	Workers() []cluster.WorkerInfo
	Stats() cluster.MemberStats
}

// collector makes a run directory's Prometheus metrics at each scrape,
// from status.json, metrics.csv's last row and the cluster's counts.
// Counters never go down: a teacher's steps and the student's add up, and
// a worker's per-phase byte counts are accumulated across phases.
type collector struct {
	dir     string
	cluster ClusterView

	mu        sync.Mutex
	phaseDone map[string]float64 // steps, samples of each phase (run directory), the largest seen
	phaseSeen map[string]float64
	bytes     map[string]*accum // by worker and direction
	rejected  float64
	mismatch  float64
}

// accum turns a count that restarts (a worker's bytes in a phase) into
// one that only grows.
type accum struct{ last, total float64 }

func (a *accum) see(v float64) float64 {
	if v >= a.last {
		a.total += v - a.last
	} else {
		a.total += v // a new phase started counting from zero
	}
	a.last = v
	return a.total
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("lathe_"+name, help, labels, nil)
}

var (
	dStep      = desc("step", "Steps done in the current phase (status.json's step).", "phase")
	dEpoch     = desc("epoch", "The epoch being trained (1-based).", "phase")
	dSteps     = desc("steps_total", "Training steps done by this process, all phases (teachers and student).")
	dSamples   = desc("samples_total", "Training samples seen by this process, all phases.")
	dLoss      = desc("loss", "The loss of the last training step.", "phase")
	dRate      = desc("samples_per_second", "Training throughput in the current epoch.", "phase")
	dETA       = desc("eta_seconds", "Estimated seconds to the end of the current phase.", "phase")
	dState     = desc("state", "1 for the run's state (training, done, failed, interrupted).", "state")
	dEpochVal  = desc("epoch_metric", "The last finished epoch's value of a metrics.csv column (train_loss, val_loss, train_accuracy, val_accuracy, lr, sparsity, weight_bits).", "phase", "name")
	dAccuracy  = desc("accuracy", "The last finished epoch's accuracy.", "phase", "split")
	dSparsity  = desc("layer_sparsity", "Each layer's fraction of zero weights at the last finished epoch.", "layer")
	dWorkers   = desc("workers", "Cluster workers by state.", "state")
	dWRate     = desc("worker_samples_per_second", "Each worker's own throughput, from its heartbeats.", "worker", "device")
	dWShare    = desc("worker_share", "Micro-shards of each step the worker computes.", "worker")
	dBytes     = desc("bytes_exchanged_total", "Data bytes the workers published and received.", "direction")
	dRejected  = desc("messages_rejected_total", "Messages refused by the coordinator and the workers (forged, stale, malformed).")
	dMismatch  = desc("digest_mismatches_total", "Worker weight digests that differed from the coordinator's.")
	dCompared  = desc("digests_compared_total", "Worker weight digests found equal to the coordinator's.")
	allMetrics = []*prometheus.Desc{dStep, dEpoch, dSteps, dSamples, dLoss, dRate, dETA, dState, dEpochVal, dAccuracy, dSparsity,
		dWorkers, dWRate, dWShare, dBytes, dRejected, dMismatch, dCompared}
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allMetrics {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		if finite(v) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
		}
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	statuses := phaseStatuses(c.dir)
	var steps, samples float64
	for _, ps := range statuses {
		if ps.ok {
			c.phaseDone[ps.name] = math.Max(c.phaseDone[ps.name], float64(ps.st.Step))
			c.phaseSeen[ps.name] = math.Max(c.phaseSeen[ps.name], float64(ps.st.SamplesSeen))
		}
		steps += c.phaseDone[ps.name]
		samples += c.phaseSeen[ps.name]
	}
	counter(dSteps, steps)
	counter(dSamples, samples)
	if cur, st, ok := newest(statuses); ok {
		gauge(dStep, float64(st.Step), cur.name)
		gauge(dEpoch, float64(st.Epoch), cur.name)
		gauge(dLoss, st.LastLoss, cur.name)
		gauge(dRate, st.SamplesPerSecond, cur.name)
		gauge(dETA, st.ETASeconds, cur.name)
		gauge(dState, 1, st.State)
		if t, _ := ReadTable(filepath.Join(cur.dir, rundir.MetricsFile)); t != nil && t.Rows > 0 {
			last := func(col string) float64 { return t.Cols[col][t.Rows-1] }
			for _, col := range []string{"train_loss", "val_loss", "lr", "sparsity", "weight_bits"} {
				if _, ok := t.Cols[col]; ok {
					gauge(dEpochVal, last(col), cur.name, col)
				}
			}
			gauge(dAccuracy, last("train_accuracy"), cur.name, "train")
			gauge(dAccuracy, last("val_accuracy"), cur.name, "validation")
			for _, h := range t.Header {
				if l, ok := strings.CutPrefix(h, "sparsity_"); ok {
					gauge(dSparsity, last(h), l)
				}
			}
		}
	}
	if c.cluster == nil {
		return
	}
	byState := map[string]float64{"ready": 0, "training": 0, "task": 0, "lost": 0, "failed": 0}
	for _, w := range c.cluster.Workers() {
		byState[w.State]++
		gauge(dWRate, w.SamplesPerSecond, w.Name, w.Device)
		gauge(dWShare, float64(w.Share), w.Name)
		c.acc(w.Name + "/sent").see(float64(w.BytesSent))
		c.acc(w.Name + "/received").see(float64(w.BytesReceived))
	}
	sent, recv := c.totals() // workers that left keep their bytes
	for s, n := range byState {
		gauge(dWorkers, n, s)
	}
	counter(dBytes, sent, "sent")
	counter(dBytes, recv, "received")
	st := c.cluster.Stats()
	c.rejected = math.Max(c.rejected, float64(st.MessagesRejected))
	c.mismatch = math.Max(c.mismatch, float64(st.DigestMismatches))
	counter(dRejected, c.rejected)
	counter(dMismatch, c.mismatch)
	counter(dCompared, float64(st.DigestsCompared))
}

func (c *collector) acc(key string) *accum {
	a := c.bytes[key]
	if a == nil {
		a = &accum{}
		c.bytes[key] = a
	}
	return a
}

// totals sums every worker's accumulated bytes, those gone included.
func (c *collector) totals() (sent, recv float64) {
	for k, a := range c.bytes {
		if strings.HasSuffix(k, "/sent") {
			sent += a.total
		} else {
			recv += a.total
		}
	}
	return sent, recv
}

// phase is one run directory of a job: the teachers' and the student's.
type phase struct{ name, dir string }

func phaseDirs(dir string) []phase {
	var out []phase
	for _, d := range teacherDirs(dir) {
		out = append(out, phase{filepath.Base(d), d})
	}
	return append(out, phase{"student", dir})
}

// phaseStatus is a phase and its status.json (ok: the file was read).
type phaseStatus struct {
	phase
	st rundir.Status
	ok bool
}

// phaseStatuses reads every phase's status.json once.
func phaseStatuses(dir string) []phaseStatus {
	var out []phaseStatus
	for _, p := range phaseDirs(dir) {
		ps := phaseStatus{phase: p}
		ps.ok, _ = readJSON(filepath.Join(p.dir, rundir.StatusFile), &ps.st)
		out = append(out, ps)
	}
	return out
}

// newest is the phase whose status.json was updated last, and its status.
func newest(statuses []phaseStatus) (phase, rundir.Status, bool) {
	var best *phaseStatus
	for i, ps := range statuses {
		if ps.ok && (best == nil || ps.st.Updated.After(best.st.Updated)) {
			best = &statuses[i]
		}
	}
	if best == nil {
		return phase{}, rundir.Status{}, false
	}
	return best.phase, best.st, true
}

// current is the phase training now (its status.json updated last).
func current(dir string) (phase, rundir.Status, bool) { return newest(phaseStatuses(dir)) }

// workerCollector is a worker's own metrics, from its heartbeat.
type workerCollector struct {
	hb func() cluster.Heartbeat

	mu                                                 sync.Mutex
	sent, recv, shards, computed, stepped, waited, cpu accum
	rejected                                           float64
}

var (
	dWStep     = desc("worker_step", "Steps the worker completed in the current phase.")
	dWState    = desc("worker_state", "1 for the worker's state (idle, training, task, failed).", "state")
	dWBytes    = desc("worker_bytes_total", "Data bytes the worker published and received.", "direction")
	dWShards   = desc("worker_shards_total", "Micro-shards the worker computed.")
	dWCompute  = desc("worker_compute_seconds_total", "Seconds the worker spent computing its micro-shards.")
	dWSteps    = desc("worker_step_seconds_total", "Seconds the worker spent in steps: computing, waiting on the other replicas, and exchanging.")
	dWWait     = desc("worker_wait_seconds_total", "Seconds of its steps the worker spent waiting on the other replicas (their partials and chunks, a coordinator too far behind).")
	dWCPU      = desc("worker_step_cpu_seconds_total", "CPU seconds the worker's process used during its steps, every thread's.")
	dWRejected = desc("worker_messages_rejected_total", "Messages the worker refused (forged, stale, malformed).")
)

func (c *workerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dWStep, dWState, dWBytes, dWShards, dWCompute, dWSteps, dWWait, dWCPU, dWRejected} {
		ch <- d
	}
}

func (c *workerCollector) Collect(ch chan<- prometheus.Metric) {
	hb := c.hb()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rejected = math.Max(c.rejected, float64(hb.MessagesRejected))
	state := hb.State
	if state == "" {
		state = "idle"
	}
	ch <- prometheus.MustNewConstMetric(dWStep, prometheus.GaugeValue, float64(hb.Step))
	ch <- prometheus.MustNewConstMetric(dWState, prometheus.GaugeValue, 1, state)
	ch <- prometheus.MustNewConstMetric(dWBytes, prometheus.CounterValue, c.sent.see(float64(hb.BytesSent)), "sent")
	ch <- prometheus.MustNewConstMetric(dWBytes, prometheus.CounterValue, c.recv.see(float64(hb.BytesReceived)), "received")
	ch <- prometheus.MustNewConstMetric(dWShards, prometheus.CounterValue, c.shards.see(float64(hb.Shards)))
	ch <- prometheus.MustNewConstMetric(dWCompute, prometheus.CounterValue, c.computed.see(hb.ComputeSeconds))
	ch <- prometheus.MustNewConstMetric(dWSteps, prometheus.CounterValue, c.stepped.see(hb.StepSeconds))
	ch <- prometheus.MustNewConstMetric(dWWait, prometheus.CounterValue, c.waited.see(hb.WaitSeconds))
	ch <- prometheus.MustNewConstMetric(dWCPU, prometheus.CounterValue, c.cpu.see(hb.CPUSeconds))
	ch <- prometheus.MustNewConstMetric(dWRejected, prometheus.CounterValue, c.rejected)
}

// WorkerMetrics serves a worker's own Prometheus metrics (worker --http)
// on /metrics, from hb (the worker's Heartbeat method).
func WorkerMetrics(hb func() cluster.Heartbeat) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&workerCollector{hb: hb})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}
