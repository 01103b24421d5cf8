package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary act as the coordinator in a child
// process, so that a test can signal a real one.
func TestMain(m *testing.M) {
	if os.Getenv("LATHE_TEST_COORDINATOR") == "1" {
		os.Exit(realMain(os.Args[1:], os.Stderr))
	}
	os.Exit(m.Run())
}

// TestSIGTERMCheckpointsAndResumes sends SIGTERM to a training
// coordinator: it writes a checkpoint where it stands and exits (130)
// without a summary; --resume then finishes the run from there.
func TestSIGTERMCheckpointsAndResumes(t *testing.T) {
	dir := t.TempDir()
	recipe := filepath.Join(dir, "r.hcl")
	os.WriteFile(recipe, []byte(`job "sig" {
  epochs     = 20
  batch      = 100
  validation = 50000
  checkpoint {
    every_epochs = 0
  }
  model {
    arch   = "mlp"
    hidden = [64]
  }
}
`), 0o644)
	run := filepath.Join(dir, "run")
	cmd := exec.Command(os.Args[0], "--recipe", recipe, "--run-dir", run, "--threads", "2", "--no-progress")
	cmd.Env = append(os.Environ(), "LATHE_TEST_COORDINATOR=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Signal once the first epoch is done (metrics.csv gains its first row),
	// with nineteen to go.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(run, "metrics.csv")); err == nil && bytes.Count(b, []byte("\n")) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("the run never finished an epoch:\n%s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Fatalf("exit %v after SIGTERM, want 130:\n%s", err, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(run, "summary.json")); err == nil {
		t.Fatal("an interrupted run left a summary")
	}
	ckpts, _ := filepath.Glob(filepath.Join(run, "checkpoints", "step-*.arrow"))
	if len(ckpts) != 1 {
		t.Fatalf("checkpoints after SIGTERM: %v\n%s", ckpts, stderr.String())
	}
	var out bytes.Buffer
	if code := realMain([]string{"--recipe", recipe, "--run-dir", run, "--resume", "--no-progress"}, &out); code != 0 {
		t.Fatalf("resume: exit %d:\n%s", code, out.String())
	}
	b, err := os.ReadFile(filepath.Join(run, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sum struct {
		ResumedFromStep int64 `json:"resumed_from_step"`
		Steps           int64 `json:"steps"`
	}
	json.Unmarshal(b, &sum)
	if sum.ResumedFromStep <= 0 || sum.ResumedFromStep >= sum.Steps || sum.Steps != 20*100 {
		t.Fatalf("resumed from step %d of %d", sum.ResumedFromStep, sum.Steps)
	}
}

// TestSecondCoordinatorOnABusyRunDirectory starts a coordinator, then a
// second one on the same run directory while the first trains: the second
// is refused at once, naming the first's pid, and the first finishes with
// the weights of a run alone.
func TestSecondCoordinatorOnABusyRunDirectory(t *testing.T) {
	dir := t.TempDir()
	recipe := filepath.Join(dir, "r.hcl")
	os.WriteFile(recipe, []byte(`job "busy" {
  epochs     = 3
  batch      = 100
  validation = 50000
  model {
    arch   = "mlp"
    hidden = [64]
  }
}
`), 0o644)
	busy, alone := filepath.Join(dir, "busy"), filepath.Join(dir, "alone")
	first := exec.Command(os.Args[0], "--recipe", recipe, "--run-dir", busy, "--threads", "1", "--no-progress")
	first.Env = append(os.Environ(), "LATHE_TEST_COORDINATOR=1")
	var stderr bytes.Buffer
	first.Stderr = &stderr
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if b, err := os.ReadFile(filepath.Join(busy, "metrics.csv")); err == nil && len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			first.Process.Kill()
			t.Fatalf("the first run never started:\n%s", stderr.String())
		}
	}
	var out bytes.Buffer
	start := time.Now()
	code := realMain([]string{"--recipe", recipe, "--run-dir", busy, "--threads", "1", "--no-progress"}, &out)
	t.Logf("refused after %v", time.Since(start))
	want := fmt.Sprintf("lathe pid %d", first.Process.Pid)
	if code != 1 || !strings.Contains(out.String(), "is in use by "+want) {
		first.Process.Kill()
		t.Fatalf("second coordinator: exit %d:\n%s", code, out.String())
	}
	if err := first.Wait(); err != nil {
		t.Fatalf("the first run: %v\n%s", err, stderr.String())
	}
	if code := realMain([]string{"--recipe", recipe, "--run-dir", alone, "--threads", "1", "--no-progress"}, &out); code != 0 {
		t.Fatalf("the run alone: exit %d\n%s", code, out.String())
	}
	if a, b := modelDigest(t, busy), modelDigest(t, alone); a != b {
		t.Fatalf("weights %s beside a refused second run, %s alone", a, b)
	}
	if b, _ := os.ReadFile(filepath.Join(busy, "metrics.csv")); bytes.IndexByte(b, 0) >= 0 || bytes.Count(b, []byte("\n")) != 4 {
		t.Fatalf("metrics.csv of the first run:\n%q", b)
	}
}
