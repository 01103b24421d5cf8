package run

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/compute/host"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/internal/testlog"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

// clusterRecipe trains a teacher, then distils it into a student that is
// pruned and quantized (weights and activations): every phase and policy a
// cluster must keep identical across replicas.
const clusterBlocks = `teacher {
    arch   = "mlp"
    hidden = [48]
    epochs = 1
  }
  distill {
    temperature = 2
    alpha       = 0.5
  }
  prune "magnitude" {
    layers      = ["fc1"]
    target      = 0.8
    from_epoch  = 0.2
    to_epoch    = 1.5
    every_steps = 5
  }
  quantize {
    layers      = ["fc1", "fc2"]
    bits        = 8
    from_epoch  = 1
    activations = 8
  }`

// testCluster is an embedded server, a coordinator and in-process workers,
// each with a connection of its own.
type testCluster struct {
	url    string
	token  string
	secret []byte // the job's (nil: unsigned)
	// syncEvery is Options.SyncEvery: 0, the default spacing of sync
	// points; ReduceEveryStep, a coordinator that reduces every step.
	syncEvery int
	coord     *cluster.Coordinator
	cancels   map[string]context.CancelFunc
	conns     map[string]interface{ Close() }
	wg        sync.WaitGroup
}

func startCluster(t *testing.T, workers int) *testCluster {
	t.Helper()
	return startSignedCluster(t, workers, nil)
}

// startReducingCluster is startCluster with a coordinator that reduces
// every step (ReduceEveryStep) instead of following the workers.
func startReducingCluster(t *testing.T, workers int) *testCluster {
	t.Helper()
	tc := startCluster(t, workers)
	tc.syncEvery = ReduceEveryStep
	return tc
}

// startSignedCluster is startCluster for a job with a secret.
func startSignedCluster(t *testing.T, workers int, secret []byte) *testCluster {
	t.Helper()
	srv, err := cluster.StartEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return startClusterOn(t, srv.URL, srv.Token, secret, srv.Shutdown, workers)
}

// startClusterOn runs a coordinator and workers on the NATS server at url.
func startClusterOn(t *testing.T, url, token string, secret []byte, shutdown func(), workers int) *testCluster {
	t.Helper()
	tc := &testCluster{url: url, token: token, secret: secret, cancels: map[string]context.CancelFunc{}, conns: map[string]interface{ Close() }{}}
	nc, err := cluster.Connect(url, cluster.Auth{Token: token}, "coordinator", false)
	if err != nil {
		t.Fatal(err)
	}
	if tc.coord, err = cluster.NewCoordinator(nc, "tiny", secret, testLog("coordinator")); err != nil {
		t.Fatal(err)
	}
	for i := range workers {
		tc.addWorker(t, "w"+string(rune('1'+i)))
	}
	t.Cleanup(func() {
		tc.coord.Close()
		for _, c := range tc.cancels {
			c()
		}
		tc.wg.Wait()
		nc.Close()
		shutdown()
	})
	return tc
}

// stockServer starts Debian's nats-server (2.9.10 on bookworm; make deps
// installs it) with JetStream and a token, on a free loopback port.
func stockServer(t *testing.T) (url, token string, shutdown func()) {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		bin = "/usr/sbin/nats-server" // Debian installs it outside a user's PATH
		if _, err := os.Stat(bin); err != nil {
			t.Fatal("the stock-server test needs nats-server: run `make deps` (apt-get install nats-server)")
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	token = "stock-server-test-token"
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", t.TempDir(), "--auth", token)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	url = fmt.Sprintf("nats://127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		nc, err := cluster.Connect(url, cluster.Auth{Token: token}, "probe", false)
		if err == nil {
			nc.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("nats-server did not come up: %v\n%s", err, out.String())
		}
	}
	return url, token, func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
}

func (tc *testCluster) addWorker(t *testing.T, name string, extra ...trainer.Policy) {
	t.Helper()
	tc.addWorkerOn(t, name, nil, extra...)
}

// addWorkerOn adds a worker computing its gradients on dev (nil: the CPU
// graph).
func (tc *testCluster) addWorkerOn(t *testing.T, name string, dev compute.Device, extra ...trainer.Policy) {
	t.Helper()
	tc.addWorkerAuto(t, name, dev, false, extra...)
}

// addWorkerAuto is addWorkerOn for a worker started with --device auto
// when auto is set.
func (tc *testCluster) addWorkerAuto(t *testing.T, name string, dev compute.Device, auto bool, extra ...trainer.Policy) {
	t.Helper()
	nc, err := cluster.Connect(tc.url, cluster.Auth{Token: tc.token}, name, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tc.cancels[name], tc.conns[name] = cancel, nc
	device := "cpu"
	if dev != nil {
		device = dev.Name()
	}
	w := &cluster.Worker{NC: nc, Job: "tiny", Name: name, Device: device, Log: testLog(name), Run: replicaPhase("", testLog(name), extra, dev, auto),
		Task: Task("", 2, testLog(name)), Secret: tc.secret}
	tc.wg.Add(1)
	go func() {
		defer tc.wg.Done()
		_ = w.Serve(ctx)
	}()
}

// kill makes a worker vanish as a killed process would: its connection
// drops and its goroutines stop.
func (tc *testCluster) kill(name string) {
	tc.conns[name].Close()
	tc.cancels[name]()
}

// clusterTimeout bounds one cluster run of the tests (a few seconds when
// all is well).
var clusterTimeout = 1 * time.Minute

func clusterRun(t *testing.T, tc *testCluster, dir string, progress func(trainer.Progress)) *rundir.Summary {
	t.Helper()
	return clusterRunBlocks(t, tc, dir, clusterBlocks, progress)
}

func clusterRunBlocks(t *testing.T, tc *testCluster, dir, blocks string, progress func(trainer.Progress)) *rundir.Summary {
	t.Helper()
	// With momentum: the optimizer state the chunks' owners keep, and
	// that moves with the chunks, is not empty.
	src := strings.Replace(withBlock(blocks), "    lr = var.lr\n", "    lr       = var.lr\n    momentum = 0.9\n", 1)
	if !strings.Contains(src, "momentum") {
		t.Fatal("the test recipe's optimizer block changed")
	}
	j, err := recipes.Parse([]byte(src), "tiny.hcl", []string{"epochs=2"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	if err := tc.coord.WaitWorkers(ctx, len(tc.conns)); err != nil {
		t.Fatal(err)
	}
	opts := Options{RunDir: dir, Cluster: tc.coord, Logger: testLog("run"), SyncEvery: tc.syncEvery}
	if progress != nil {
		opts.Progress = progress
	}
	sum, err := Execute(ctx, j, opts)
	if err != nil {
		dumpCluster(t)
		t.Fatal(err)
	}
	return sum
}

func weightsDigest(t *testing.T, path string) string {
	t.Helper()
	f, err := checkpoint.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	return checkpoint.WeightsDigest(f.Tensors)
}

// TestClusterWeightsDoNotDependOnWorkers trains the same recipe on one and
// on two workers, and on two of which one is killed mid-run, with a
// coordinator that reduces every step: the model files hold the same
// weights to the bit (TestClusterFollowingCoordinator: the same with the
// default, a coordinator that follows the workers).
func TestClusterWeightsDoNotDependOnWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("trains three clusters")
	}
	one := t.TempDir()
	s1 := clusterRun(t, startReducingCluster(t, 1), one, nil)
	if s1.Cluster == nil || s1.Cluster.Workers != 1 || s1.TestAccuracy < 0.8 {
		t.Fatalf("one worker: cluster %+v, accuracy %v", s1.Cluster, s1.TestAccuracy)
	}
	// The workers were given no dataset: they trained on the coordinator's.
	if !strings.Contains(clusterLog.String(), "training on the dataset the coordinator sent") {
		t.Fatal("a worker without a dataset did not train on the one the coordinator sent")
	}
	two := t.TempDir()
	tc2 := startReducingCluster(t, 2)
	// The workers' own throughput, from their heartbeats, looked at while
	// the run goes on.
	var fastest atomic.Uint64
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for _, w := range tc2.coord.Workers() {
				if w.SamplesPerSecond > math.Float64frombits(fastest.Load()) {
					fastest.Store(math.Float64bits(w.SamplesPerSecond))
				}
			}
		}
	}()
	s2 := clusterRun(t, tc2, two, nil)
	close(stop)
	<-watched
	if fastest.Load() == 0 {
		t.Error("no worker's throughput was known during the run")
	}
	if s2.Cluster.Workers != 2 || s2.Cluster.BytesSentPerStep <= 0 {
		t.Fatalf("two workers: %+v", s2.Cluster)
	}
	// Where each worker's step time went, from its heartbeats.
	if len(s2.Cluster.StepTime) != 2 {
		t.Fatalf("step time of %d workers: %+v", len(s2.Cluster.StepTime), s2.Cluster.StepTime)
	}
	for name, st := range s2.Cluster.StepTime {
		if st.Seconds <= 0 || st.Compute <= 0 || st.Wait < 0 || st.Exchange < 0 || st.Compute+st.Wait > 1 || runtime.GOOS == "linux" && st.CPU <= 0 {
			t.Fatalf("%s's step time: %+v", name, st)
		}
	}
	// The phase's pace once started: its steps after the first sync point
	// at or past cluster.SteadyAfter, timed by the coordinator.
	if s2.Steps > cluster.SteadyAfter && (s2.Cluster.SteadySamplesPerSecond <= 0 || s2.Cluster.SteadyFromStep < cluster.SteadyAfter) {
		t.Fatalf("%d steps, steady pace %v from step %d", s2.Steps, s2.Cluster.SteadySamplesPerSecond, s2.Cluster.SteadyFromStep)
	}
	// The replicas' weight digests were compared during the run, and agreed.
	if s2.Cluster.DigestsCompared == 0 || s2.Cluster.DigestMismatches != 0 {
		t.Fatalf("digests compared %d, mismatches %d", s2.Cluster.DigestsCompared, s2.Cluster.DigestMismatches)
	}
	var st rundir.Status
	// (the workers in registration order, which the two race for)
	if b, err := os.ReadFile(filepath.Join(two, rundir.StatusFile)); err != nil || json.Unmarshal(b, &st) != nil ||
		st.State != "done" || len(st.Workers) != 2 || st.Workers[0].Name+st.Workers[1].Name != "w1w2" && st.Workers[0].Name+st.Workers[1].Name != "w2w1" ||
		st.Workers[0].Device != "cpu" || st.Workers[1].Device != "cpu" {
		t.Fatalf("status.json of a cluster run: %+v %v", st, err)
	}
	d1, d2 := weightsDigest(t, filepath.Join(one, rundir.ModelFile)), weightsDigest(t, filepath.Join(two, rundir.ModelFile))
	if d1 != d2 {
		t.Fatalf("1 worker %s, 2 workers %s", d1, d2)
	}
	if t1, t2 := weightsDigest(t, filepath.Join(one, "teacher", rundir.ModelFile)), weightsDigest(t, filepath.Join(two, "teacher", rundir.ModelFile)); t1 != t2 {
		t.Fatalf("teachers differ: %s, %s", t1, t2)
	}
	if s1.TestAccuracy != s2.TestAccuracy {
		t.Fatalf("test accuracy %v and %v", s1.TestAccuracy, s2.TestAccuracy)
	}

	// Two workers, one killed in the student's first epoch while the
	// coordinator lags behind them (slowed here, as a busy machine slows
	// it): the steps the workers finished before the loss must reach the
	// coordinator from the generation they were reduced in.
	tc := startReducingCluster(t, 2)
	lost := t.TempDir()
	var once sync.Once
	s3 := clusterRun(t, tc, lost, func(p trainer.Progress) {
		if p.Epochs != 2 || p.Epoch != 1 { // the student's first epoch
			return
		}
		switch { // the workers run ahead, up to cluster.Window/2 steps
		case p.Step >= 2 && p.Step < 10:
			time.Sleep(100 * time.Millisecond)
		case p.Step >= 10 && p.Step < 20: // past the loss, which takes 3 s to notice
			time.Sleep(400 * time.Millisecond)
		}
		if p.Step >= 10 {
			once.Do(func() { go tc.kill("w2") })
		}
	})
	if s3.Cluster.WorkersLost != 1 {
		t.Fatalf("lost workers: %+v", s3.Cluster)
	}
	// The survivor took over the lost worker's chunk, and the chunk's
	// optimizer state came from the coordinator; without a change, none
	// moved.
	if s3.Cluster.OptimizerStatesMoved == 0 || s2.Cluster.OptimizerStatesMoved != 0 || s1.Cluster.OptimizerStatesMoved != 0 {
		t.Fatalf("optimizer states moved: %d after a loss, %d and %d without", s3.Cluster.OptimizerStatesMoved, s2.Cluster.OptimizerStatesMoved, s1.Cluster.OptimizerStatesMoved)
	}
	if d3 := weightsDigest(t, filepath.Join(lost, rundir.ModelFile)); d3 != d1 {
		t.Fatalf("after a lost worker %s, fault-free %s", d3, d1)
	}

	// One worker, and a second that registers in the student's first
	// epoch: it is admitted at a step boundary ahead with the
	// coordinator's state there (weights, masks, momentum, quantizer
	// ranges) and computes its share from then on — the members wait for
	// it from that step, so the run cannot finish without it — and the
	// weights are the fault-free ones.
	tc = startReducingCluster(t, 1)
	joined := t.TempDir()
	var joinOnce sync.Once
	s5 := clusterRun(t, tc, joined, func(p trainer.Progress) {
		if p.Epochs != 2 || p.Epoch != 1 {
			return
		}
		if p.Step >= 3 {
			joinOnce.Do(func() { tc.addWorker(t, "w2") })
		}
		if p.Step >= 3 && p.Step < 30 {
			time.Sleep(20 * time.Millisecond) // the join lands inside the phase
		}
	})
	if s5.Cluster.WorkersJoined != 1 || s5.Cluster.Workers != 2 || s5.Cluster.DigestMismatches != 0 {
		t.Fatalf("a worker joining mid-phase: %+v", s5.Cluster)
	}
	if !strings.Contains(clusterLog.String(), "joining the running phase") {
		t.Fatal("the second worker did not join the running phase")
	}
	if d5 := weightsDigest(t, filepath.Join(joined, rundir.ModelFile)); d5 != d1 {
		t.Fatalf("after a worker joined mid-phase %s, fault-free %s", d5, d1)
	}

	// Two workers, one of which computes a NaN in the student's second
	// epoch (its own weights poisoned, as faulty memory would): it is
	// quarantined, its gradient never reaches the sum, and the other
	// finishes with the fault-free weights.
	tc = startReducingCluster(t, 1)
	tc.addWorker(t, "w2", poison{at: 50})
	sick := t.TempDir()
	s4 := clusterRun(t, tc, sick, nil)
	if s4.Cluster.WorkersFailed != 1 || s4.Cluster.WorkersLost != 0 {
		t.Fatalf("quarantined workers: %+v", s4.Cluster)
	}
	if d4 := weightsDigest(t, filepath.Join(sick, rundir.ModelFile)); d4 != d1 {
		t.Fatalf("after a quarantined worker %s, fault-free %s", d4, d1)
	}
}

// testLog logs into clusterLog, which a failing cluster test prints (and
// tests read), and to stderr too with LATHE_TEST_LOG=1.
func testLog(name string) hclog.Logger {
	var out io.Writer = &clusterLog
	if os.Getenv("LATHE_TEST_LOG") != "" {
		out = io.MultiWriter(os.Stderr, &clusterLog)
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: out})
}

var clusterLog testlog.Buffer

// dumpCluster prints the cluster's log and every goroutine's stack, for a
// cluster test that failed.
func dumpCluster(t *testing.T) {
	t.Helper()
	var stacks bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&stacks, 1)
	t.Logf("cluster log:\n%s\ngoroutines:\n%s", clusterLog.String(), stacks.String())
}

// TestClusterOnAStockNATSServer trains on Debian's nats-server (not the
// embedded one) with two workers: the weights equal those of one worker
// on the embedded server, bit for bit.
func TestClusterOnAStockNATSServer(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two clusters")
	}
	url, token, shutdown := stockServer(t)
	stock := t.TempDir()
	s := clusterRun(t, startClusterOn(t, url, token, nil, shutdown, 2), stock, nil)
	if s.Cluster == nil || s.Cluster.Workers != 2 {
		t.Fatalf("cluster %+v", s.Cluster)
	}
	embedded := t.TempDir()
	clusterRun(t, startCluster(t, 1), embedded, nil)
	if a, b := weightsDigest(t, filepath.Join(stock, rundir.ModelFile)), weightsDigest(t, filepath.Join(embedded, rundir.ModelFile)); a != b {
		t.Fatalf("stock server, 2 workers %s; embedded, 1 worker %s", a, b)
	}
}

// TestCPUAndDeviceWorkersShareAJob: one worker computes on the CPU graph,
// the other its micro-shards' gradients on a device (the host reference
// device here, as a GPU would): the job trains, the replicas stay
// identical (their digests agree), and the step is split by their speeds.
func TestCPUAndDeviceWorkersShareAJob(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a cluster")
	}
	dev := host.New(cpu.New(cpu.Options{Threads: 1}))
	t.Cleanup(func() { dev.Close() }) // after the cluster's cleanup (LIFO): its workers free their buffers first
	tc := startCluster(t, 1)
	tc.addWorkerOn(t, "dev", dev)
	blocks := strings.Replace(clusterBlocks, `    from_epoch  = 1
    activations = 8`, `    from_epoch  = 1
    granularity = "per_channel"
    symmetric   = true`, 1)
	sum := clusterRunBlocks(t, tc, t.TempDir(), blocks, nil)
	c := sum.Cluster
	if c.Workers != 2 || c.DigestsCompared == 0 || c.DigestMismatches != 0 || c.WorkersFailed != 0 {
		t.Fatalf("cluster %+v", c)
	}
	if sum.TestAccuracy < 0.8 {
		t.Fatalf("test accuracy %v", sum.TestAccuracy)
	}
	var devInfo *cluster.WorkerInfo
	for _, w := range tc.coord.Workers() {
		if w.Name == "dev" {
			devInfo = &w
		}
	}
	if devInfo == nil || devInfo.Device != "cpu" || devInfo.Capacity <= 0 || devInfo.Step == 0 {
		t.Fatalf("the device worker: %+v", devInfo)
	}
	if !strings.Contains(clusterLog.String(), "computing gradients on the device") {
		t.Fatal("the device worker did not compute on its device")
	}
}

// TestAutoDeviceWorkerFallsBackToTheCPU: a worker with --device auto whose
// device cannot compute the job (activation quantization here) computes
// on the CPU graph instead — the weights are those of a CPU-only cluster.
func TestAutoDeviceWorkerFallsBackToTheCPU(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two clusters")
	}
	dev := host.New(cpu.New(cpu.Options{Threads: 1}))
	t.Cleanup(func() { dev.Close() }) // after the clusters' cleanups (LIFO): their workers free their buffers first
	// One phase (no teacher), with activation quantization from epoch 1.
	blocks := clusterBlocks[strings.Index(clusterBlocks, "  quantize {"):]
	one := t.TempDir()
	clusterRunBlocks(t, startCluster(t, 1), one, blocks, nil)
	tc := startCluster(t, 1)
	tc.addWorkerAuto(t, "auto", dev, true)
	mixed := t.TempDir()
	sum := clusterRunBlocks(t, tc, mixed, blocks, nil)
	if sum.Cluster.Workers != 2 || sum.Cluster.WorkersFailed != 0 {
		t.Fatalf("cluster %+v", sum.Cluster)
	}
	if !strings.Contains(clusterLog.String(), "computing this phase's gradients on the CPU") {
		t.Fatal("the auto worker did not say it fell back to the CPU")
	}
	if a, b := weightsDigest(t, filepath.Join(one, rundir.ModelFile)), weightsDigest(t, filepath.Join(mixed, rundir.ModelFile)); a != b {
		t.Fatalf("with the auto worker %s, CPU only %s", b, a)
	}
}

// TestClusterSensitivityOnTheWorkers: a sensitivity analysis in a cluster
// run is fanned out, one cell per task, to the phase's workers; the
// replicas take the coordinator's table (masks are decided in one place),
// so the run finishes with digests that agree. Each cell equals the
// accuracy of the epoch-end checkpoint's weights (the analysis runs at
// that epoch's end and restores them) with that layer pruned, evaluated
// here; one and two workers give the same table and weights.
func TestClusterSensitivityOnTheWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two clusters")
	}
	block := sensitivityBlocks
	tables := map[int]trainer.SensitivityTable{}
	digests := map[int]string{}
	var dir string
	for _, n := range []int{1, 2} {
		dir = t.TempDir()
		s := clusterRunBlocks(t, startCluster(t, n), dir, block, nil)
		if s.Cluster.DigestMismatches != 0 || s.Cluster.DigestsCompared == 0 {
			t.Fatalf("%d workers: digests %+v", n, s.Cluster)
		}
		var table trainer.SensitivityTable
		b, err := os.ReadFile(filepath.Join(dir, rundir.SensitivityFile))
		if err != nil || json.Unmarshal(b, &table) != nil || len(table.Rows) != 6 {
			t.Fatalf("%d workers: sensitivity.json %s %v", n, b, err)
		}
		tables[n], digests[n] = table, weightsDigest(t, filepath.Join(dir, rundir.ModelFile))
	}
	if !strings.Contains(clusterLog.String(), "sensitivity cells evaluated by the workers") ||
		!strings.Contains(clusterLog.String(), "task beside the phase") {
		t.Fatal("the sensitivity cells were not evaluated by the workers")
	}
	if fmt.Sprint(tables[1]) != fmt.Sprint(tables[2]) || digests[1] != digests[2] {
		t.Fatalf("1 worker: %+v %s; 2 workers: %+v %s", tables[1], digests[1], tables[2], digests[2])
	}
	// The cells, recomputed here from the first epoch's checkpoint.
	j, err := recipes.Parse([]byte(withBlock(block)), "tiny.hcl", []string{"epochs=2"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := checkpoint.Read(filepath.Join(dir, rundir.CheckpointDir, rundir.CheckpointName(39)))
	if err != nil {
		t.Fatal(err)
	}
	rp, err := loadResume(f, "epoch 1", j, nil)
	if err != nil {
		t.Fatal(err)
	}
	train, _, err := data.Load("mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	_, val, err := data.SplitValidation(train, j.Validation)
	if err != nil {
		t.Fatal(err)
	}
	table := tables[2]
	if base, err := cellAccuracy(rp.model, val, "", 0, j.EvalBatch); err != nil || base != table.Baseline {
		t.Fatalf("baseline %v here, %v in the table (%v)", base, table.Baseline, err)
	}
	for _, r := range table.Rows {
		acc, err := cellAccuracy(rp.model, val, r.Layer, r.Sparsity, j.EvalBatch)
		if err != nil || acc != r.Accuracy {
			t.Fatalf("%s at %v: %v here, %v in the table (%v)", r.Layer, r.Sparsity, acc, r.Accuracy, err)
		}
	}
}

// TestClusterRebuiltModelMovesOptimizerState factorizes a layer after the
// first epoch: the rebuilt model's vector is new, so each worker takes its
// chunk's optimizer state (remapped by the coordinator, which holds the
// whole state) from the coordinator, and one and two workers still give
// the same weights.
func TestClusterRebuiltModelMovesOptimizerState(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two clusters")
	}
	const block = `factorize {
    layer    = "fc1"
    rank     = 8
    at_epoch = 1
  }`
	digests := map[string]string{}
	// (2f: two workers and a coordinator that follows, serving the
	// rebuilt state from the sync point at the epoch's end.)
	for _, run := range []struct {
		name         string
		n, syncEvery int
	}{{"1", 1, ReduceEveryStep}, {"2", 2, ReduceEveryStep}, {"2f", 2, 4}} {
		dir := t.TempDir()
		tc := startCluster(t, run.n)
		tc.syncEvery = run.syncEvery
		s := clusterRunBlocks(t, tc, dir, block, nil)
		if s.Cluster.DigestMismatches != 0 || s.Cluster.OptimizerStatesMoved < int64(run.n) || len(s.Ranks) != 1 {
			t.Fatalf("%s workers: ranks %v, cluster %+v", run.name, s.Ranks, s.Cluster)
		}
		digests[run.name] = weightsDigest(t, filepath.Join(dir, rundir.ModelFile))
	}
	if digests["1"] != digests["2"] || digests["1"] != digests["2f"] {
		t.Fatalf("1 worker %s, 2 workers %s, 2 following %s", digests["1"], digests["2"], digests["2f"])
	}
}
