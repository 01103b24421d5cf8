package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/rundir"
)

// TestWorkerProcessJoinsMidRun: a coordinator process on a NATS server
// (--nats) trains with one local worker; a worker process started in its
// second epoch joins the running phase at a step boundary and computes
// from there; the run counts it and ends with the weights of a run on one
// worker throughout. The worker process leaves when the job ends.
func TestWorkerProcessJoinsMidRun(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two clusters of processes")
	}
	srv, err := cluster.StartEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	dir := t.TempDir()
	recipe := filepath.Join(dir, "r.hcl")
	os.WriteFile(recipe, []byte(`job "join" {
  epochs     = 30
  batch      = 100
  validation = 50000
  model {
    arch   = "mlp"
    hidden = [32]
  }
}
`), 0o644)
	env := append(os.Environ(), "LATHE_TEST_COORDINATOR=1", "LATHE_NATS_TOKEN="+srv.Token, "LATHE_JOB_SECRET=join-test-secret")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	joined := filepath.Join(dir, "joined")
	coord := exec.CommandContext(ctx, os.Args[0], "--recipe", recipe, "--run-dir", joined, "--nats", srv.URL, "--workers", "1", "--no-progress")
	coord.Env = env
	var cerr bytes.Buffer
	coord.Stderr = &cerr
	if err := coord.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var st rundir.Status
		b, _ := os.ReadFile(filepath.Join(joined, rundir.StatusFile))
		if json.Unmarshal(b, &st) == nil && st.Epoch >= 2 {
			break
		}
		if time.Now().After(deadline) {
			coord.Process.Kill()
			t.Fatalf("the run never got to its second epoch:\n%s", cerr.String())
		}
	}
	late := exec.CommandContext(ctx, os.Args[0], "worker", "--nats", srv.URL, "--name", "late", "--device", "cpu")
	late.Env = env
	var lerr bytes.Buffer
	late.Stderr = &lerr
	if err := late.Start(); err != nil {
		t.Fatal(err)
	}
	if err := coord.Wait(); err != nil {
		t.Fatalf("the run: %v\n%s\nlate worker:\n%s", err, cerr.String(), lerr.String())
	}
	if err := late.Wait(); err != nil {
		t.Fatalf("the late worker: %v\n%s", err, lerr.String())
	}
	var sum rundir.Summary
	b, err := os.ReadFile(filepath.Join(joined, rundir.SummaryFile))
	if err != nil || json.Unmarshal(b, &sum) != nil || sum.Cluster == nil || sum.Cluster.WorkersJoined != 1 || sum.Cluster.Workers != 2 {
		t.Fatalf("summary %+v %v\n%s\nlate worker:\n%s", sum.Cluster, err, cerr.String(), lerr.String())
	}
	if !bytes.Contains(lerr.Bytes(), []byte("joining the running phase")) {
		t.Fatalf("the late worker did not join the running phase:\n%s", lerr.String())
	}
	one := filepath.Join(dir, "one")
	c1 := exec.CommandContext(ctx, os.Args[0], "--recipe", recipe, "--run-dir", one, "--workers", "1", "--no-progress")
	c1.Env = append(os.Environ(), "LATHE_TEST_COORDINATOR=1")
	if out, err := c1.CombinedOutput(); err != nil {
		t.Fatalf("one worker: %v\n%s", err, out)
	}
	if a, b := modelDigest(t, joined), modelDigest(t, one); a != b {
		t.Fatalf("a worker joined mid-run: %s; one worker: %s", a, b)
	}
}
