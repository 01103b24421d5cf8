package report

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lathe-ml/lathe/cluster"
)

func parse(t *testing.T, body string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	return fams
}

// A worker's byte and shard counts restart with each phase; its metrics
// keep counting up across the restart.
func TestWorkerMetricsOnlyGrow(t *testing.T) {
	hb := cluster.Heartbeat{Name: "w", State: "training", Step: 10, BytesSent: 1000, BytesReceived: 500, Shards: 40, ComputeSeconds: 2, StepSeconds: 5, WaitSeconds: 1, CPUSeconds: 4}
	h := WorkerMetrics(func() cluster.Heartbeat { return hb })
	scrape := func() map[string]*dto.MetricFamily {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return parse(t, rec.Body.String())
	}
	value := func(fams map[string]*dto.MetricFamily, name, label string) float64 {
		for _, m := range fams[name].GetMetric() {
			if label == "" || (len(m.Label) > 0 && m.Label[0].GetValue() == label) {
				if m.Counter != nil {
					return m.Counter.GetValue()
				}
				return m.Gauge.GetValue()
			}
		}
		t.Fatalf("no %s{%s}", name, label)
		return 0
	}
	first := scrape()
	if v := value(first, "lathe_worker_bytes_total", "sent"); v != 1000 {
		t.Fatalf("bytes sent %v", v)
	}
	hb = cluster.Heartbeat{Name: "w", State: "training", Step: 3, BytesSent: 300, Shards: 12, ComputeSeconds: 0.5, StepSeconds: 1, WaitSeconds: 0.25, CPUSeconds: 0.75, MessagesRejected: 2} // a new phase
	second := scrape()
	for _, c := range []struct {
		name, label string
		want        float64
	}{{"lathe_worker_bytes_total", "sent", 1300}, {"lathe_worker_bytes_total", "received", 500}, {"lathe_worker_shards_total", "", 52},
		{"lathe_worker_compute_seconds_total", "", 2.5}, {"lathe_worker_step_seconds_total", "", 6}, {"lathe_worker_wait_seconds_total", "", 1.25}, {"lathe_worker_step_cpu_seconds_total", "", 4.75}, {"lathe_worker_messages_rejected_total", "", 2}, {"lathe_worker_step", "", 3}} {
		if got := value(second, c.name, c.label); got != c.want {
			t.Fatalf("%s{%s} = %v after the phase restarted, want %v", c.name, c.label, got, c.want)
		}
	}
	for name := range second {
		if !strings.HasPrefix(name, "lathe_") {
			t.Fatalf("metric %s", name)
		}
	}
}

// fakeCluster is a coordinator's view whose worker restarts its counts.
type fakeCluster struct {
	workers []cluster.WorkerInfo
	stats   cluster.MemberStats
}

func (f *fakeCluster) Workers() []cluster.WorkerInfo { return f.workers }
func (f *fakeCluster) Stats() cluster.MemberStats    { return f.stats }

// The coordinator's counters keep the bytes of workers that left and of
// phases that ended.
func TestClusterCountersKeepWhatLeft(t *testing.T) {
	fc := &fakeCluster{workers: []cluster.WorkerInfo{{State: "training", BytesSent: 100}, {State: "training", BytesSent: 50}}}
	fc.workers[0].Name, fc.workers[1].Name = "a", "b"
	c := &collector{dir: t.TempDir(), cluster: fc, phaseDone: map[string]float64{}, phaseSeen: map[string]float64{}, bytes: map[string]*accum{}}
	collect := func() float64 {
		ch := make(chan prometheus.Metric, 64)
		go func() { c.Collect(ch); close(ch) }()
		total := 0.0
		for m := range ch {
			var d dto.Metric
			m.Write(&d)
			if strings.Contains(m.Desc().String(), "bytes_exchanged_total") && d.Counter != nil && d.Label[0].GetValue() == "sent" {
				total = d.Counter.GetValue()
			}
		}
		return total
	}
	if got := collect(); got != 150 {
		t.Fatalf("sent %v", got)
	}
	fc.workers = fc.workers[:1]  // b left
	fc.workers[0].BytesSent = 20 // a's new phase
	if got := collect(); got != 170 {
		t.Fatalf("sent %v after a worker left and a phase restarted, want 170", got)
	}
}
