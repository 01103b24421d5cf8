package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/rundir"
)

// stat returns the fields of a process's /proc stat after its command
// name (state, parent, …), or nil when the process is gone.
func stat(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := string(b) // pid (comm) state ppid …; comm may hold spaces, so cut after ')'
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

// children lists the processes whose parent is pid (Linux /proc).
func children(pid int) []int {
	var out []int
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range paths {
		if f := stat(p); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			c, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			out = append(out, c)
		}
	}
	return out
}

// modelDigest is the weights digest of a run directory's model file.
func modelDigest(t *testing.T, runDir string) string {
	t.Helper()
	f, err := checkpoint.Read(filepath.Join(runDir, rundir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	return checkpoint.WeightsDigest(f.Tensors)
}

func alive(pid int) bool {
	f := stat("/proc/" + strconv.Itoa(pid) + "/stat")
	return len(f) > 0 && f[0] != "Z" // a zombie has exited
}

// TestLocalWorkerKilledMidRun runs a real coordinator process with two
// local worker processes on its embedded NATS server and SIGKILLs one of
// them mid-run: the job finishes, counts the loss, leaves no process
// behind, and its weights equal those of a run on one worker. Then it
// SIGKILLs a coordinator and resumes it: the same weights again.
func TestLocalWorkerKilledMidRun(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two clusters of processes")
	}
	dir := t.TempDir()
	recipe := filepath.Join(dir, "r.hcl")
	// Epochs enough that a kill seen through status.json (rewritten at most
	// once a second) lands with steps still to run.
	os.WriteFile(recipe, []byte(`job "kill" {
  epochs     = 12
  batch      = 100
  validation = 50000
  checkpoint {
    every_steps = 40
  }
  model {
    arch   = "mlp"
    hidden = [32]
  }
}
`), 0o644)
	start := func(runDir string, workers int) (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(os.Args[0], "--recipe", recipe, "--run-dir", runDir, "--workers", strconv.Itoa(workers), "--no-progress")
		cmd.Env = append(os.Environ(), "LATHE_TEST_COORDINATOR=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &stderr
	}
	killed := filepath.Join(dir, "killed")
	cmd, stderr := start(killed, 2)
	// Once both workers train and the run is past its first epoch,
	// SIGKILL one of them.
	var workers []int
	deadline := time.Now().Add(90 * time.Second)
	for {
		var st rundir.Status
		b, _ := os.ReadFile(filepath.Join(killed, rundir.StatusFile))
		if json.Unmarshal(b, &st) == nil && st.Epoch >= 2 && len(st.Workers) == 2 {
			workers = children(cmd.Process.Pid)
			if len(workers) == 2 {
				break
			}
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("the run never got to its second epoch on two workers:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(workers[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the run failed after a worker was killed: %v\n%s", err, stderr.String())
	}
	var sum rundir.Summary
	b, err := os.ReadFile(filepath.Join(killed, rundir.SummaryFile))
	if err != nil || json.Unmarshal(b, &sum) != nil || sum.Cluster == nil || sum.Cluster.WorkersLost != 1 {
		t.Fatalf("summary %+v %v\n%s", sum.Cluster, err, stderr.String())
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if !alive(workers[0]) && !alive(workers[1]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker processes %v outlived the coordinator", workers)
		}
	}
	one := filepath.Join(dir, "one")
	cmd, stderr = start(one, 1)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("one worker: %v\n%s", err, stderr.String())
	}
	digest := func(p string) string { return modelDigest(t, p) }
	if a, b := digest(killed), digest(one); a != b {
		t.Fatalf("a worker killed: %s; one worker: %s", a, b)
	}

	// The coordinator itself SIGKILLed once a checkpoint is written in the
	// second epoch: its local workers die with it; restarted with
	// --resume (and two new workers) it finishes with the same weights.
	again := filepath.Join(dir, "again")
	cmd, stderr = start(again, 2)
	deadline = time.Now().Add(90 * time.Second)
	for {
		ckpts, _ := filepath.Glob(filepath.Join(again, "checkpoints", "step-*.arrow"))
		var st rundir.Status
		b, _ := os.ReadFile(filepath.Join(again, rundir.StatusFile))
		if len(ckpts) > 0 && json.Unmarshal(b, &st) == nil && st.Epoch >= 2 {
			workers = children(cmd.Process.Pid)
			if len(workers) == 2 {
				break
			}
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("the run never checkpointed in its second epoch:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if !alive(workers[0]) && !alive(workers[1]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker processes %v outlived a SIGKILLed coordinator", workers)
		}
	}
	if _, err := os.Stat(filepath.Join(again, rundir.SummaryFile)); err == nil {
		t.Fatal("a killed run left a summary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a few seconds when all is well
	defer cancel()
	cmd = exec.CommandContext(ctx, os.Args[0], "--recipe", recipe, "--run-dir", again, "--workers", "2", "--resume", "--no-progress")
	cmd.Env = append(os.Environ(), "LATHE_TEST_COORDINATOR=1")
	var out bytes.Buffer
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("resume: %v\n%s", err, out.String())
	}
	var resumed rundir.Summary
	b, _ = os.ReadFile(filepath.Join(again, rundir.SummaryFile))
	if err := json.Unmarshal(b, &resumed); err != nil || resumed.ResumedFromStep <= 0 {
		t.Fatalf("resumed summary: %+v %v\n%s", resumed, err, out.String())
	}
	if a, b := digest(again), digest(one); a != b {
		t.Fatalf("coordinator killed and resumed: %s; one worker: %s", a, b)
	}
}
