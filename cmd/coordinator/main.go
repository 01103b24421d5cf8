// Command coordinator runs a lathe job from a recipe:
//
//	coordinator --recipe FILE [-var name=value]... [--run-dir DIR] [--data-dir DIR] [--threads N]
//	            [--resume | --resume-from FILE] [--checkpoint-every-steps N]
//	            [--workers N] [--nats URL [credentials]] [--min-workers N] [--micro-shards K]
//	            [--sync-every K] [--http ADDR]
//
// Without --workers or --nats it trains in-process. With --workers N it
// starts an embedded nats-server (loopback, random port, a per-run token,
// JetStream in the run directory) and N local worker processes that die
// with it; with --nats it uses an existing NATS deployment, and remote
// workers (cmd/worker) join. Either way the workers compute the gradients
// and this process keeps the state and writes every file. It shows a progress bar per epoch on a terminal and plain log lines
// otherwise, and leaves summary.json, metrics.csv, the resolved recipe, a
// manifest, model.arrow and checkpoints/ in the run directory (default
// runs/<job>/). On SIGINT or SIGTERM it writes a checkpoint and exits;
// --resume continues from the newest valid one. --http serves a live page
// of the run and its Prometheus metrics.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/compute/cuda"
	"github.com/lathe-ml/lathe/internal/workercli"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/report"
	"github.com/lathe-ml/lathe/run"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func main() { os.Exit(realMain(os.Args[1:], os.Stderr)) }

func realMain(args []string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "worker" {
		return workercli.Main(args[1:], stderr) // a local worker
	}
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		recipe   = fs.String("recipe", "", "recipe file (HCL)")
		runDir   = fs.String("run-dir", "", "run directory (default runs/<job>)")
		dataDir  = fs.String("data-dir", "", "directory holding the dataset's IDX files (default: where it is installed)")
		threads  = fs.Int("threads", 0, "compute threads (default: the recipe's, else all cores)")
		logLevel = fs.String("log-level", "info", "trace, debug, info, warn or error")
		logJSON  = fs.Bool("log-json", false, "log as JSON lines")
		noBar    = fs.Bool("no-progress", false, "no progress bar, even on a terminal")
		dryRun   = fs.Bool("dry-run", false, "check the recipe against the model and print what happens when, without training")
		resume   = fs.Bool("resume", false, "continue from the newest valid checkpoint in the run directory")
		from     = fs.String("resume-from", "", "continue from this training checkpoint")
		every    = fs.Int("checkpoint-every-steps", 0, "write a checkpoint every N steps (overrides the recipe's checkpoint.every_steps)")
		workers  = fs.Int("workers", -1, "train on a cluster with N local worker processes (0: remote workers only); default: in-process")
		natsURL  = fs.String("nats", "", "use this NATS deployment instead of an embedded server")
		minWork  = fs.Int("min-workers", 1, "workers to wait for before training starts")
		shards   = fs.Int("micro-shards", 0, "micro-shards per batch in cluster mode (default 8, or the largest divisor of the batch below it): the weights are the same for any number of workers up to it; a fixed cluster runs fastest with it set to its worker count")
		syncK    = fs.Int("sync-every", cluster.DefaultSyncEvery, "in cluster mode, the coordinator takes the workers' state every K steps (and at each epoch's end and checkpoint) instead of reducing every step; a lost or joining worker restarts every worker from the last such point (0: the coordinator reduces every step)")
		wdevs    = fs.String("worker-devices", "", "the local workers' devices in order, comma-separated (cpu, cuda, cuda:N; default cpu): e.g. --workers 2 --worker-devices cpu,cuda")
		httpAddr = fs.String("http", "", "serve a live page, /metrics (Prometheus) and /debug/pprof on this address while the job runs (host:port; a bare :port listens on loopback only)")
		device   = fs.String("device", "cpu", "cpu, or cuda / cuda:N: train device-resident on that GPU (MLP, LeNet-5, ResNet and MobileNet recipes with sgd, pruning, QAT and distillation; what it cannot do yet is refused naming the field)")
		plane    = fs.String("data-plane", cluster.PlaneAuto, "how the cluster's workers exchange each step's gradients and weights: auto (direct connections between them, NATS where one cannot be reached), peer (direct connections only) or nats (all through the NATS server)")
		peerAt   = fs.String("peer-listen", "", "host:port the coordinator's end of the peer data plane listens on (default: loopback with an embedded server, else every interface; any port)")
		peerTLS  = fs.String("peer-tls", cluster.PeerTLSAuto, "encrypt the peer data plane's connections: auto (when the connection to NATS is encrypted), on or off")
		peerAdv  = fs.String("peer-advertise", "", "host[:port] the workers dial to reach the coordinator's end of the peer data plane (default: the address this machine reaches NATS from)")
		af       = workercli.Register(fs)
		vars     multiFlag
		sweeps   multiFlag
	)
	fs.Var(&vars, "var", "set a recipe variable: -var name=value (repeatable)")
	fs.Var(&sweeps, "sweep", "run the recipe once per value of a variable: --sweep name=v1,v2,… (repeatable: every combination); "+
		"the runs go to <run-dir>/sweep/, the table to <run-dir>/sweep.csv (default run dir runs/<job>-sweep); "+
		"with --workers or --nats each run is a task for a worker, several at once")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: coordinator --recipe FILE [-var name=value]... [--run-dir DIR] [--data-dir DIR] [--resume | --resume-from FILE]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *recipe == "" {
		fmt.Fprintln(stderr, "coordinator: --recipe FILE is required")
		fs.Usage()
		return 2
	}
	if err := checkFlags(fs, *threads, *workers, *minWork, *shards, *every, *syncK, *logLevel, *resume, *from); err != nil {
		fmt.Fprintln(stderr, "coordinator:", err)
		return 2
	}
	dp := dataPlane{peer: cluster.PeerConfig{Listen: *peerAt, Advertise: *peerAdv, TLS: *peerTLS}}
	var err error
	if dp.plane, err = cluster.ParsePlane(*plane); err != nil {
		fmt.Fprintln(stderr, "coordinator: --data-plane:", err)
		return 2
	}
	if _, err := cluster.ParsePeerTLS(*peerTLS); err != nil {
		fmt.Fprintln(stderr, "coordinator: --peer-tls:", err)
		return 2
	}
	var opts run.Options
	tty := isTerminal(os.Stderr) && !*noBar
	log := hclog.New(&hclog.LoggerOptions{Name: "lathe", Level: hclog.LevelFromString(*logLevel), Output: stderr,
		JSONFormat: *logJSON, Color: hclog.AutoColor})

	job, err := recipes.Load(*recipe, vars)
	if err == nil {
		err = run.Check(job)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	kind, index, err := cuda.ParseDevice(*device)
	if err != nil || kind == "auto" {
		fmt.Fprintf(stderr, "coordinator: --device %q: cpu, cuda or cuda:N\n", *device)
		return 2
	}
	if kind == "cuda" && (*workers >= 0 || *natsURL != "") {
		fmt.Fprintln(stderr, "coordinator: --device cuda trains in this process; it does not combine with --workers or --nats yet")
		return 2
	}
	if kind == "cuda" {
		// Opened before anything else (a dry run checks it too).
		e, err := cuda.Open(index, cuda.Options{Logger: log.Named("cuda")})
		if err != nil {
			fmt.Fprintf(stderr, "coordinator: --device %s: %v\n", *device, err)
			return 1
		}
		defer e.Close()
		opts.Device = e
	}
	if *dryRun {
		if err := run.DryRun(os.Stdout, job); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if err := run.TargetDryRun(os.Stdout, job, log); err != nil { // a target search: its first round's settings
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts.RunDir, opts.DataDir, opts.Threads, opts.Logger = *runDir, *dataDir, *threads, log
	opts.Resume, opts.ResumeFrom, opts.CheckpointEverySteps = *resume, *from, *every
	dir := *runDir
	if dir == "" {
		dir = filepath.Join("runs", job.Name)
	}
	var sweep []run.SweepVar
	for _, s := range sweeps {
		sv, err := run.ParseSweep(s)
		if err != nil {
			fmt.Fprintln(stderr, "coordinator:", err)
			return 2
		}
		sweep = append(sweep, sv)
	}
	if len(sweep) > 0 {
		if *resume || *from != "" {
			fmt.Fprintln(stderr, "coordinator: --sweep does not combine with --resume yet")
			return 2
		}
		if *runDir == "" {
			dir = filepath.Join("runs", job.Name+"-sweep")
		}
	}
	// The run directory is this process's until it exits: a second
	// coordinator on it is refused before it touches anything there.
	release, err := rundir.Lock(dir)
	if err != nil {
		fmt.Fprintln(stderr, "coordinator:", err)
		return 1
	}
	defer release()
	if *workers >= 0 || *natsURL != "" {
		var devices []string
		if *wdevs != "" {
			devices = strings.Split(*wdevs, ",")
			for _, d := range devices {
				if _, _, err := cuda.ParseDevice(d); err != nil || len(devices) > *workers {
					fmt.Fprintf(stderr, "coordinator: --worker-devices %q: one of cpu, cuda, cuda:N, auto per local worker (--workers %d)\n", *wdevs, *workers)
					return 2
				}
			}
		}
		c, closeCluster, err := startCluster(ctx, log, job.Name, dir, *natsURL, *workers, *minWork, *dataDir, devices, af, dp)
		if err != nil {
			log.Error("cluster", "error", err)
			return 1
		}
		defer closeCluster()
		opts.Cluster, opts.MicroShards, opts.SyncEvery = c, *shards, *syncK
		if *syncK == 0 {
			opts.SyncEvery = run.ReduceEveryStep
		}
	}
	if *httpAddr != "" {
		if len(sweep) > 0 {
			fmt.Fprintln(stderr, "coordinator: --http follows one run; it does not combine with --sweep yet")
			return 2
		}
		var cv report.ClusterView
		if opts.Cluster != nil {
			cv = opts.Cluster
		}
		addr, closeHTTP, err := report.Serve(*httpAddr, report.NewLive(dir, cv))
		if err != nil {
			fmt.Fprintln(stderr, "coordinator:", err)
			return 2
		}
		defer closeHTTP()
		log.Info("live page", "url", "http://"+addr.String()+"/", "metrics", "http://"+addr.String()+"/metrics")
	}
	var bar *progressBar
	if tty {
		bar = &progressBar{w: stderr}
		if c := opts.Cluster; c != nil {
			bar.workers = func() string { return workerRates(c.Workers()) }
		}
		opts.Progress = bar.update
	}
	if len(sweep) > 0 {
		rows, err := run.Sweep(ctx, *recipe, vars, sweep, dir, opts)
		bar.finish()
		for _, r := range rows {
			var kv []string
			for _, sv := range sweep {
				kv = append(kv, sv.Name+"="+r.Vars[sv.Name])
			}
			if r.Error != "" {
				fmt.Fprintf(os.Stdout, "%-30s failed: %s\n", strings.Join(kv, " "), r.Error)
				continue
			}
			fmt.Fprintf(os.Stdout, "%-30s test %.4f  sparsity %.3f  model %d bytes (%.1f×)  %.1f s\n", strings.Join(kv, " "),
				r.TestAccuracy, r.Sparsity, r.ModelBytes, r.ModelRatio, r.WallSeconds)
		}
		if len(rows) > 0 {
			fmt.Fprintf(os.Stdout, "table: %s\n", filepath.Join(dir, run.SweepCSV))
		}
		if err != nil {
			log.Error("sweep", "error", err)
			return 1
		}
		return 0
	}
	sum, err := run.Execute(ctx, job, opts)
	bar.finish()
	if err != nil {
		if errors.Is(err, context.Canceled) {
			log.Error("interrupted: a checkpoint was written and no summary; continue with --resume")
			return 130
		}
		log.Error("job failed", "error", err)
		return 1
	}
	fmt.Fprintf(os.Stdout, "test accuracy %.4f, val accuracy %.4f, %.0f samples/s, %.1f s\nsummary: %s\nmodel:   %s (%d bytes, %.1f× smaller than fp32)\n",
		sum.TestAccuracy, sum.ValAccuracy, sum.SamplesPerSecond, sum.WallSeconds, filepath.Join(dir, rundir.SummaryFile),
		filepath.Join(dir, rundir.ModelFile), sum.ModelBytes, sum.ModelRatio)
	return 0
}

// checkFlags refuses flag values out of range and combinations that do not
// go together, naming the flag; and arguments that are not flags.
func checkFlags(fs *flag.FlagSet, threads, workers, minWorkers, shards, every, syncEvery int, logLevel string, resume bool, from string) error {
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected argument %q (flags start with -; -var name=value sets a variable)", fs.Arg(0))
	case threads < 0:
		return fmt.Errorf("--threads %d: a number of threads ≥ 1 (0 or absent: the recipe's, else every core)", threads)
	case workers < -1:
		return fmt.Errorf("--workers %d: a number of local workers ≥ 0", workers)
	case minWorkers < 0:
		return fmt.Errorf("--min-workers %d: a number of workers ≥ 0", minWorkers)
	case shards < 0:
		return fmt.Errorf("--micro-shards %d: a number of micro-shards ≥ 1 (0: the default)", shards)
	case every < 0:
		return fmt.Errorf("--checkpoint-every-steps %d: a number of steps ≥ 1 (0: the recipe's)", every)
	case syncEvery < 0:
		return fmt.Errorf("--sync-every %d: a number of steps ≥ 1 (0: the coordinator reduces every step)", syncEvery)
	case resume && from != "":
		return errors.New("--resume and --resume-from: give one (--resume takes the newest checkpoint of the run directory)")
	}
	if hclog.LevelFromString(logLevel) == hclog.NoLevel {
		return fmt.Errorf("--log-level %q: trace, debug, info, warn or error", logLevel)
	}
	return nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// progressBar draws one line per epoch, redrawn at most ten times a second
// and ended when the epoch's last step is done, so that log lines start on
// a line of their own.
type progressBar struct {
	w       io.Writer
	last    time.Time
	open    bool          // a bar line is drawn and not yet ended
	workers func() string // on a cluster: each worker's throughput
}

// workerRates is the progress line's account of the training workers:
// name and the samples/s each computes, with the micro-shards of each step
// it computes once the step is split unevenly by speed.
func workerRates(ws []cluster.WorkerInfo) string {
	var parts []string
	uneven, first := false, -1
	for _, w := range ws {
		if w.State == "training" {
			if first < 0 {
				first = w.Share
			}
			uneven = uneven || w.Share != first
		}
	}
	for _, w := range ws {
		if w.State == "training" {
			s := fmt.Sprintf("%s %.0f/s", w.Name, w.SamplesPerSecond)
			if uneven {
				s += fmt.Sprintf(" ×%d", w.Share)
			}
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, " ")
}

func (b *progressBar) update(p trainer.Progress) {
	end := p.Step == p.Steps
	if !end && time.Since(b.last) < 100*time.Millisecond {
		return
	}
	b.last = time.Now()
	const width = 30
	done := width * p.Step / p.Steps
	workers := ""
	if b.workers != nil {
		workers = "| " + b.workers() + " "
	}
	fmt.Fprintf(b.w, "\repoch %d/%d [%s%s] %d/%d loss %.4f %6.0f samples/s ETA %s %s",
		p.Epoch, p.Epochs, strings.Repeat("=", done), strings.Repeat(" ", width-done), p.Step, p.Steps,
		p.Loss, p.SamplesPerSec, p.ETA.Round(time.Second), workers)
	b.open = !end
	if end {
		fmt.Fprintln(b.w)
	}
}

func (b *progressBar) finish() {
	if b != nil && b.open {
		fmt.Fprintln(b.w)
	}
}
