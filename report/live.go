package report

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lathe-ml/lathe/rundir"
)

//go:embed live.html
var livePage []byte

// Live serves a running job's page and metrics from its run directory:
//
//	GET /          the live page (it polls the two below)
//	GET /status    {"phase": …, "status": status.json of the phase training now, "workers": …}
//	GET /epochs    metrics.csv of that phase, by column
//	GET /metrics   Prometheus metrics, every name starting lathe_
//	GET /debug/pprof/…  Go's profiles of this process
//
// Everything is read from the files the run writes, so the page shows
// exactly what status.json says.
type Live struct {
	dir string
	reg *prometheus.Registry
	mux *http.ServeMux
}

// NewLive serves the run directory dir; c, when not nil, is the cluster
// whose workers and counts the metrics show.
func NewLive(dir string, c ClusterView) *Live {
	l := &Live{dir: dir, reg: prometheus.NewRegistry(), mux: http.NewServeMux()}
	l.reg.MustRegister(&collector{dir: dir, cluster: c, phaseDone: map[string]float64{}, phaseSeen: map[string]float64{}, bytes: map[string]*accum{}})
	l.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(livePage)
	})
	l.mux.HandleFunc("GET /status", l.status)
	l.mux.HandleFunc("GET /epochs", l.epochs)
	l.mux.Handle("GET /metrics", promhttp.HandlerFor(l.reg, promhttp.HandlerOpts{}))
	l.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	l.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	return l
}

func (l *Live) ServeHTTP(w http.ResponseWriter, r *http.Request) { l.mux.ServeHTTP(w, r) }

func (l *Live) status(w http.ResponseWriter, _ *http.Request) {
	p, st, ok := current(l.dir)
	if !ok {
		http.Error(w, "no status.json yet", http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, map[string]any{"phase": p.name, "status": st})
}

func (l *Live) epochs(w http.ResponseWriter, _ *http.Request) {
	p, _, ok := current(l.dir)
	if !ok {
		writeJSON(w, map[string]any{})
		return
	}
	t, err := ReadTable(filepath.Join(p.dir, rundir.MetricsFile))
	if err != nil || t == nil {
		writeJSON(w, map[string]any{})
		return
	}
	cols := map[string][]any{}
	for _, h := range t.Header {
		for _, v := range t.Cols[h] {
			var cell any
			if finite(v) {
				cell = v
			}
			cols[h] = append(cols[h], cell) // JSON has no NaN: null
		}
	}
	writeJSON(w, map[string]any{"phase": p.name, "columns": cols})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

// Serve listens on addr and serves h until the returned close is called;
// it returns the address it listens on (a port of 0 picks a free one). A
// bare :port listens on the loopback interface only: a live page is
// reachable from elsewhere only when its address says so.
func Serve(addr string, h http.Handler) (net.Addr, func() error, error) {
	bind := addr
	if strings.HasPrefix(bind, ":") {
		bind = "127.0.0.1" + bind
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, nil, fmt.Errorf("--http %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) // returns when closed
	return ln.Addr(), srv.Close, nil
}
