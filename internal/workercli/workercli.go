// Package workercli is the worker's command line, shared by cmd/worker and
// the coordinator's local workers (`coordinator worker …`).
package workercli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"

	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/compute/cuda"
	"github.com/lathe-ml/lathe/report"
	"github.com/lathe-ml/lathe/run"
)

// AuthFlags are the NATS credential flags the coordinator and the worker
// share. Secrets are read from files or the environment, never taken from
// the command line itself.
type AuthFlags struct {
	TokenFile, User, PasswordFile, Creds, NKey, CA, Cert, Key *string
	// JobSecretFile holds the job's secret, with which the coordinator
	// signs the objects it puts in the store and workers check them.
	JobSecretFile *string
}

// Register adds the credential flags to fs.
func Register(fs *flag.FlagSet) AuthFlags {
	return AuthFlags{
		TokenFile:    fs.String("token-file", "", "file holding the NATS token (default: $LATHE_NATS_TOKEN)"),
		User:         fs.String("user", "", "NATS user name"),
		PasswordFile: fs.String("password-file", "", "file holding the NATS password (default: $LATHE_NATS_PASSWORD)"),
		Creds:        fs.String("creds", "", "NATS .creds file (JWT and NKey seed)"),
		NKey:         fs.String("nkey", "", "NATS NKey seed file"),
		CA:           fs.String("tls-ca", "", "PEM file of the CA that signed the NATS server's certificate"),
		Cert:         fs.String("tls-cert", "", "client certificate (PEM) for mutual TLS"),
		Key:          fs.String("tls-key", "", "client key (PEM) for mutual TLS"),
		JobSecretFile: fs.String("job-secret-file", "", "file holding the job's secret, which signs the objects in the job's store "+
			"(default: $LATHE_JOB_SECRET; none: objects are unsigned)"),
	}
}

// JobSecret reads the job's secret ("" when none is given).
func (a AuthFlags) JobSecret() (string, error) {
	return cluster.SecretFrom(*a.JobSecretFile, "LATHE_JOB_SECRET")
}

// Auth reads the secrets the flags point at.
func (a AuthFlags) Auth() (cluster.Auth, error) {
	tok, err := cluster.SecretFrom(*a.TokenFile, "LATHE_NATS_TOKEN")
	if err != nil {
		return cluster.Auth{}, err
	}
	pw, err := cluster.SecretFrom(*a.PasswordFile, "LATHE_NATS_PASSWORD")
	if err != nil {
		return cluster.Auth{}, err
	}
	return cluster.Auth{Token: tok, User: *a.User, Password: pw, CredsFile: *a.Creds, NKeyFile: *a.NKey,
		CA: *a.CA, Cert: *a.Cert, Key: *a.Key}, nil
}

// Main runs a worker; it returns the exit status.
func Main(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		url      = fs.String("nats", "", "NATS URL, e.g. nats://host:4222 (required)")
		job      = fs.String("job", "", "job to join (default: the only job running on that NATS)")
		name     = fs.String("name", "", "worker name, unique in the job (default: host-pid)")
		dataDir  = fs.String("data-dir", "", "directory holding the dataset's IDX files (default: where it is installed)")
		device   = fs.String("device", "auto", "auto, cpu, cuda or cuda:N: where the worker computes its micro-shards' gradients (auto: CUDA when it starts, else the CPU with a log line saying why)")
		logLevel = fs.String("log-level", "info", "trace, debug, info, warn or error")
		local    = fs.Bool("local", false, "a local worker of an embedded server: exit when the coordinator does")
		httpAddr = fs.String("http", "", "serve this worker's Prometheus metrics on /metrics at this address (host:port; a bare :port listens on loopback only)")
		threads  = fs.Int("threads", 0, "compute threads for the whole runs the coordinator hands this worker (a sweep's points; default: the recipe's, else every core)")
		peerAt   = fs.String("peer-listen", "", "host:port this worker's end of the peer data plane listens on (default: every interface, any port; off: none, its data goes through NATS)")
		peerAdv  = fs.String("peer-advertise", "", "host[:port] the other replicas dial to reach this worker (default: the address this machine reaches NATS from)")
		af       = Register(fs)
	)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: worker --nats URL [--token-file F | --user U --password-file F | --creds F | --nkey F] [--tls-ca F] [--job JOB] [--name NAME] [--data-dir DIR]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *url == "" || fs.NArg() > 0 {
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "worker: unexpected argument %q\n", fs.Arg(0))
		}
		fs.Usage()
		return 2
	}
	if *threads < 0 {
		fmt.Fprintf(stderr, "worker: --threads %d: a number of threads ≥ 1 (0 or absent: the recipe's, else every core)\n", *threads)
		return 2
	}
	if hclog.LevelFromString(*logLevel) == hclog.NoLevel {
		fmt.Fprintf(stderr, "worker: --log-level %q: trace, debug, info, warn or error\n", *logLevel)
		return 2
	}
	kind, index, err := cuda.ParseDevice(*device)
	if err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return 2
	}
	if *name == "" {
		host, _ := os.Hostname()
		*name = fmt.Sprintf("%s-%d", strings.Split(host, ".")[0], os.Getpid())
	}
	log := hclog.New(&hclog.LoggerOptions{Name: *name, Level: hclog.LevelFromString(*logLevel), Output: stderr})
	// The device is checked before anything is reached over the network:
	// starting the engine checks everything it needs (the driver, the
	// device, cuBLAS, NVRTC, and that the kernels compile for it).
	var engine *cuda.Device
	switch kind {
	case "cuda":
		e, err := cuda.Open(index, cuda.Options{Logger: log.Named("cuda")})
		if err != nil {
			fmt.Fprintf(stderr, "worker: --device %s: %v\n", *device, err)
			return 1
		}
		engine = e
	case "auto":
		if e, err := cuda.Open(0, cuda.Options{Logger: log.Named("cuda")}); err == nil {
			engine = e
		} else {
			log.Info("no usable CUDA device: computing on the CPU", "reason", err)
		}
	}
	if engine != nil {
		defer engine.Close()
		log.Info("computing micro-shard gradients on the GPU", "device", engine.Name())
	}
	auth, err := af.Auth()
	if err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return 2
	}
	// A worker never needs what it publishes itself.
	nc, err := cluster.Connect(*url, auth, *name, !*local, nats.NoEcho())
	if err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return 1
	}
	defer nc.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *local {
		// Belt and braces beside the parent-death signal: a local worker
		// whose coordinator is gone exits.
		parent := os.Getppid()
		go func() {
			for range time.Tick(time.Second) {
				if os.Getppid() != parent {
					log.Error("the coordinator is gone; exiting")
					os.Exit(1)
				}
			}
		}()
	}
	secret, err := af.JobSecret()
	if err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return 2
	}
	w := &cluster.Worker{NC: nc, Job: *job, Name: *name, Device: "cpu", Log: log, Run: run.ReplicaPhase(*dataDir, log), Secret: []byte(secret),
		Task: run.Task(*dataDir, *threads, log), Peer: cluster.PeerConfig{Listen: *peerAt, Advertise: *peerAdv}}
	if engine != nil {
		w.Device, w.Run = engine.Name(), run.ReplicaPhaseOn(*dataDir, log, engine, kind == "auto")
	}
	if *httpAddr != "" {
		addr, closeHTTP, err := report.Serve(*httpAddr, report.WorkerMetrics(w.Heartbeat))
		if err != nil {
			fmt.Fprintln(stderr, "worker:", err)
			return 2
		}
		defer closeHTTP()
		log.Info("metrics", "url", "http://"+addr.String()+"/metrics")
	}
	if err := w.Serve(ctx); err != nil && ctx.Err() == nil {
		log.Error("worker stopped", "error", err)
		return 1
	}
	return 0
}
