package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/internal/workercli"
	"github.com/lathe-ml/lathe/rundir"
)

// dataPlane is the cluster's data plane, and where the coordinator's end
// of it listens.
type dataPlane struct {
	plane string
	peer  cluster.PeerConfig
}

// startCluster connects the coordinator to NATS — an embedded server in
// the run directory unless url is given — and starts the local workers.
// The returned function stops the workers and the server.
func startCluster(ctx context.Context, log hclog.Logger, job, dir, url string, workers, minWorkers int, dataDir string, devices []string, af workercli.AuthFlags, dp dataPlane) (*cluster.Coordinator, func(), error) {
	var auth cluster.Auth
	var srv *cluster.Embedded
	if url == "" {
		if err := rundir.Prepare(dir, job); err != nil {
			return nil, nil, err
		}
		var err error
		store := filepath.Join(dir, rundir.NATSDir)
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
	secret, err := af.JobSecret()
	if err != nil {
		nc.Close()
		if srv != nil {
			srv.Shutdown()
		}
		return nil, nil, err
	}
	if secret == "" && srv != nil {
		// An embedded server's job: a secret of its own, handed to the
		// local workers like the token.
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			nc.Close()
			srv.Shutdown()
			return nil, nil, fmt.Errorf("cluster: %w", err)
		}
		secret = hex.EncodeToString(b)
	}
	if secret == "" {
		log.Warn("no job secret (--job-secret-file or $LATHE_JOB_SECRET): the job's messages and the objects in its store are not signed")
	}
	c, err := cluster.NewCoordinator(nc, job, []byte(secret), log.Named("cluster"))
	if err != nil {
		nc.Close()
		if srv != nil {
			srv.Shutdown()
		}
		return nil, nil, err
	}
	if dp.peer.Listen == "" && srv != nil {
		dp.peer.Listen = "127.0.0.1:0" // an embedded server listens on loopback only: so do its peers
	}
	if err := c.SetDataPlane(dp.plane, dp.peer); err != nil {
		c.Close()
		nc.Close()
		if srv != nil {
			srv.Shutdown()
		}
		return nil, nil, err
	}
	if plane, addr := c.DataPlane(); addr != "" {
		log.Info("data plane", "plane", plane, "peer_addr", addr)
	} else {
		log.Info("data plane", "plane", plane)
	}
	var procs []*exec.Cmd
	var exits []chan struct{}                   // closed when a local worker has exited
	exited := make(chan error, max(workers, 1)) // why, for those that exit early
	stop := func() {
		c.Close()
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, e := range exits {
			<-e
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
			// The machine's cores split between the local workers, for the
			// runs they do whole (a sweep's points); a replica of a
			// data-parallel phase computes with one thread anyway.
			args := []string{"worker", "--local", "--nats", url, "--job", job, "--name", fmt.Sprintf("local-%d", k+1),
				"--threads", strconv.Itoa(max(1, runtime.NumCPU()/workers)), "--peer-listen", "127.0.0.1:0"}
			if dataDir != "" {
				args = append(args, "--data-dir", dataDir)
			}
			if k < len(devices) {
				args = append(args, "--device", devices[k])
			} else {
				args = append(args, "--device", "cpu")
			}
			cmd := exec.Command(self, args...)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			cmd.Env = append(os.Environ(), "LATHE_NATS_TOKEN="+auth.Token, "LATHE_JOB_SECRET="+secret)
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				stop()
				return nil, nil, fmt.Errorf("cluster: start local worker: %w", err)
			}
			procs = append(procs, cmd)
			done := make(chan struct{})
			exits = append(exits, done)
			go func(name string) {
				err := cmd.Wait()
				exited <- fmt.Errorf("cluster: local worker %s exited (%v) before the workers were ready; its messages are above", name, err)
				close(done)
			}(fmt.Sprintf("local-%d", k+1))
		}
		log.Info("local workers started", "workers", workers)
	}
	// A local worker that exits before it registers (a device it cannot
	// use, say) ends the wait with its reason.
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case err := <-exited:
			cancel(err)
		case <-wctx.Done():
		}
	}()
	if err := c.WaitWorkers(wctx, max(minWorkers, workers)); err != nil {
		stop()
		if cause := context.Cause(wctx); cause != nil && ctx.Err() == nil {
			return nil, nil, cause
		}
		return nil, nil, err
	}
	return c, stop, nil
}
