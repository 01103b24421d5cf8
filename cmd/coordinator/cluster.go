package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/internal/workercli"
	"github.com/lathe-ml/lathe/run"
)

// startCluster connects the coordinator to NATS — an embedded server in
// the run directory unless url is given — and starts the local workers.
// The returned function stops the workers and the server.
func startCluster(ctx context.Context, log hclog.Logger, job, dir, url string, workers, minWorkers int, dataDir string, af workercli.AuthFlags) (*cluster.Coordinator, func(), error) {
	var auth cluster.Auth
	var srv *cluster.Embedded
	if url == "" {
		if err := run.PrepareDir(dir, job); err != nil {
			return nil, nil, err
		}
		var err error
		store := filepath.Join(dir, run.NATSDir)
		if srv, err = cluster.StartEmbedded(store); err != nil {
			return nil, nil, err
		}
		url, auth = srv.URL, cluster.Auth{Token: srv.Token}
		log.Info("embedded NATS server started", "url", url, "store", store)
	} else {
		var err error
		if auth, err = af.Auth(); err != nil {
			return nil, nil, err
		}
	}
	nc, err := cluster.Connect(url, auth, "coordinator", srv == nil)
	if err != nil {
		if srv != nil {
			srv.Shutdown()
		}
		return nil, nil, err
	}
	c, err := cluster.NewCoordinator(nc, job, log.Named("cluster"))
	if err != nil {
		nc.Close()
		if srv != nil {
			srv.Shutdown()
		}
		return nil, nil, err
	}
	var procs []*exec.Cmd
	stop := func() {
		c.Close()
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			_ = p.Wait()
		}
		nc.Close()
		if srv != nil {
			srv.Shutdown()
		}
	}
	if workers > 0 {
		self, err := os.Executable()
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("cluster: %w", err)
		}
		// The parent-death signal is tied to the thread that starts the
		// child: start them from a thread that lives as long as the process.
		runtime.LockOSThread()
		for k := range workers {
			args := []string{"worker", "--local", "--nats", url, "--job", job, "--name", fmt.Sprintf("local-%d", k+1)}
			if dataDir != "" {
				args = append(args, "--data-dir", dataDir)
			}
			cmd := exec.Command(self, args...)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			cmd.Env = append(os.Environ(), "LATHE_NATS_TOKEN="+auth.Token)
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				stop()
				return nil, nil, fmt.Errorf("cluster: start local worker: %w", err)
			}
			procs = append(procs, cmd)
		}
		log.Info("local workers started", "workers", workers)
	}
	if err := c.WaitWorkers(ctx, max(minWorkers, workers)); err != nil {
		stop()
		return nil, nil, err
	}
	return c, stop, nil
}
