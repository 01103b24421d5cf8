package run

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

// forger is a NATS client on a running job's server that holds the
// server's credential: it watches every subject of the job and publishes,
// beside the real messages, malformed, oversized, replayed and unsigned
// copies of each kind, and forgeries of its own (a stop, a registration).
// With insider set it also holds the job's secret and signs what it
// forges (a buggy worker): malformed headers and bodies, never a message
// a member could have sent.
type forger struct {
	nc      *nats.Conn
	secret  []byte // the insider's key (nil: an outsider)
	seed    uint64
	mu      sync.Mutex
	perKind map[string]int // forgeries made from each kind of message
	sent    atomic.Int64
	sub     *nats.Subscription
}

// forgeriesPerKind bounds how many captured messages of each kind the
// forger makes copies of (each gives several forgeries).
const forgeriesPerKind = 12

func startForger(t *testing.T, tc *testCluster, secret []byte, seed uint64) *forger {
	t.Helper()
	nc, err := cluster.Connect(tc.url, cluster.Auth{Token: tc.token}, "forger", false, nats.NoEcho())
	if err != nil {
		t.Fatal(err)
	}
	f := &forger{nc: nc, secret: secret, seed: seed, perKind: map[string]int{}}
	t.Logf("forger seed %d (insider %v)", seed, secret != nil)
	f.sub, err = nc.Subscribe("lathe.tiny.>", f.onMessage)
	if err != nil {
		t.Fatal(err)
	}
	_ = f.sub.SetPendingLimits(-1, -1)
	// A registration of its own (signed it would be a worker's).
	if secret == nil {
		f.publish(&nats.Msg{Subject: "lathe.tiny.w.evil.join", Data: mustJSON(cluster.Hello{Name: "evil", Version: cluster.Version, Cores: 64, Device: "cpu"})})
	}
	t.Cleanup(func() {
		_ = f.sub.Unsubscribe()
		nc.Close()
	})
	return f
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// kind is a message's kind: the subject's tokens after the sender's name.
func kindOf(subject string) string {
	parts := strings.SplitN(subject, ".", 5)
	if len(parts) < 5 {
		return subject
	}
	return parts[2] + "." + parts[4]
}

// publish sends m signed with the insider's key, or as it is.
func (f *forger) publish(m *nats.Msg) {
	if f.secret != nil {
		m.Header.Del("Lathe-Mac")
		m = cluster.Sign(m, f.secret)
	}
	_ = f.nc.PublishMsg(m)
	f.sent.Add(1)
}

func (f *forger) onMessage(m *nats.Msg) {
	k := kindOf(m.Subject)
	f.mu.Lock()
	n := f.perKind[k]
	f.perKind[k] = n + 1
	f.mu.Unlock()
	if n >= forgeriesPerKind {
		return
	}
	r := rand.New(rand.NewPCG(f.seed, uint64(n)))
	for _, forge := range f.forgeries(m) {
		if c := forge(r); c != nil {
			f.publish(c)
		}
	}
	if k == "c.at" {
		// Once a step: the requests a member makes only after a fault,
		// forged, with values out of range.
		for _, c := range f.requests() {
			f.publish(c)
			for _, forge := range f.forgeries(c) {
				if c := forge(r); c != nil {
					f.publish(c)
				}
			}
		}
	}
}

// requests are forged requests on the subjects a job uses rarely:
// registration, shared values, a chunk's optimizer state, resends, a
// step's result, a task's result.
func (f *forger) requests() []*nats.Msg {
	inbox := f.nc.NewRespInbox()
	req := func(subject string, v any) *nats.Msg {
		return &nats.Msg{Subject: subject, Reply: inbox, Header: nats.Header{}, Data: mustJSON(v)}
	}
	type o = map[string]any
	return []*nats.Msg{
		req("lathe.tiny.w.w1.shared", o{"phase": 1, "key": strings.Repeat("k", 4096)}),
		req("lathe.tiny.w.w1.moments", o{"phase": 1, "step": 3, "lo": -1, "hi": 1 << 40}),
		req("lathe.tiny.w.w2.moments", o{"phase": 2, "step": 1 << 40, "lo": 0, "hi": 10}),
		req("lathe.tiny.w.w1.resend.w2", o{"kind": "rs", "gen": 1, "step": 2, "to": "nobody"}),
		req("lathe.tiny.w.w1.fetch", o{"kind": "fetch", "step": -7}),
		req("lathe.tiny.c.coordinator.fetch", o{"kind": "fetch-updated", "step": 1 << 50}),
		req("lathe.tiny.w.w1.done", o{"id": "no-such-task"}),
		req("lathe.tiny.w.w1.join", cluster.Hello{Name: "w1", Version: cluster.Version, Cores: 1, Device: "cpu", PID: 1}),
	}
}

// copyOf is m with its headers and body copied, to the same subject.
func copyOf(m *nats.Msg) *nats.Msg {
	c := &nats.Msg{Subject: m.Subject, Header: nats.Header{}, Data: slices.Clone(m.Data)}
	for k, v := range m.Header {
		c.Header[k] = slices.Clone(v)
	}
	return c
}

// forgeries are the ways a captured message is spoilt; each returns the
// message to publish (nil: none of that kind).
func (f *forger) forgeries(m *nats.Msg) []func(r *rand.Rand) *nats.Msg {
	header := func(name, value string) func(*rand.Rand) *nats.Msg {
		return func(*rand.Rand) *nats.Msg {
			if m.Header.Get(name) == "" {
				return nil
			}
			c := copyOf(m)
			c.Header.Set(name, value)
			return c
		}
	}
	out := []func(*rand.Rand) *nats.Msg{
		// Replayed as it was: a duplicate, or (control, heartbeat) a replay.
		func(*rand.Rand) *nats.Msg {
			if f.secret != nil {
				return nil // re-signed it would be a new message
			}
			return copyOf(m)
		},
		// Unsigned, and signed with a guess.
		func(*rand.Rand) *nats.Msg {
			c := copyOf(m)
			c.Header.Del("Lathe-Mac")
			return c
		},
		func(r *rand.Rand) *nats.Msg {
			c := copyOf(m)
			c.Header.Set("Lathe-Mac", strings.Repeat("ab", 32))
			return c
		},
		// Garbage bodies: random bytes, truncated, empty, oversized JSON.
		func(r *rand.Rand) *nats.Msg {
			c := copyOf(m)
			c.Data = make([]byte, 1+r.IntN(64))
			for i := range c.Data {
				c.Data[i] = byte(r.Uint32())
			}
			return c
		},
		func(*rand.Rand) *nats.Msg {
			c := copyOf(m)
			c.Data = c.Data[:len(c.Data)/2]
			return c
		},
		func(*rand.Rand) *nats.Msg { c := copyOf(m); c.Data = nil; return c },
		// Data parts: a length of 2^40 (the allocation that killed a
		// coordinator), offsets outside the vector, a generation and a
		// step far ahead, another job and phase, numbers that do not parse.
		header("Lathe-Len", "1099511627776"),
		header("Lathe-Len", "-5"),
		header("Lathe-Off", "-1"),
		header("Lathe-Off", "9223372036854775807"),
		header("Lathe-Gen", "18446744073709551615"),
		header("Lathe-Step", "1000000000"),
		header("Lathe-Step", "-3"),
		header("Lathe-Job", "other"),
		header("Lathe-Phase", "99"),
		header("Lathe-Len", "x"),
		header("Lathe-Seq", "1"),
	}
	if strings.HasSuffix(m.Subject, ".ctl") {
		// Control: a stop, a re-registration of everyone, an unknown kind.
		for _, c := range []cluster.Control{{Kind: "stop", Phase: 1}, {Kind: "register", Members: []string{"w1", "w2"}}, {Kind: "explode"}} {
			out = append(out, func(*rand.Rand) *nats.Msg {
				if f.secret != nil && c.Kind != "explode" {
					return nil // an insider's stop would be the coordinator's word
				}
				return &nats.Msg{Subject: m.Subject, Header: nats.Header{}, Data: mustJSON(c)}
			})
		}
	}
	return out
}

// TestForgedMessagesDoNotChangeTheRun runs a signed two-worker job while a
// forger without the job's secret, and then one with it, publish spoilt
// copies of every kind of message the job sends: the runs end with the
// fault-free weights, the forged messages counted as rejected, and the
// forged registration refused.
func TestForgedMessagesDoNotChangeTheRun(t *testing.T) {
	if testing.Short() {
		t.Skip("trains three clusters")
	}
	secret := []byte("the job's secret")
	clean := t.TempDir()
	s0 := clusterRun(t, startSignedCluster(t, 2, secret), clean, nil)
	want := weightsDigest(t, filepath.Join(clean, rundir.ModelFile))
	if s0.Cluster.MessagesRejected != 0 {
		t.Fatalf("a fault-free run rejected %d messages", s0.Cluster.MessagesRejected)
	}
	for _, tt := range []struct {
		name   string
		secret []byte
	}{{"outsider", nil}, {"insider", secret}} {
		t.Run(tt.name, func(t *testing.T) {
			tc := startSignedCluster(t, 2, secret)
			// The step's data through NATS, where the forger sees (and
			// spoils) every kind of message; forged frames on the peer
			// data plane are cluster's TestForgedFramesAreRefused.
			if err := tc.coord.SetDataPlane(cluster.PlaneNATS, cluster.PeerConfig{}); err != nil {
				t.Fatal(err)
			}
			f := startForger(t, tc, tt.secret, uint64(time.Now().UnixNano()))
			dir := t.TempDir()
			s := clusterRun(t, tc, dir, nil)
			if got := weightsDigest(t, filepath.Join(dir, rundir.ModelFile)); got != want {
				t.Fatalf("weights %s under forgery, %s without", got, want)
			}
			f.mu.Lock()
			kinds := len(f.perKind)
			f.mu.Unlock()
			if s.Cluster.MessagesRejected == 0 || f.sent.Load() == 0 || kinds < 6 {
				t.Fatalf("%d forgeries of %d kinds, %d rejected", f.sent.Load(), kinds, s.Cluster.MessagesRejected)
			}
			t.Logf("%d forgeries of %d kinds (%v); %d messages rejected", f.sent.Load(), kinds, f.perKind, s.Cluster.MessagesRejected)
			if s.Cluster.Workers != 2 {
				t.Fatalf("workers %d", s.Cluster.Workers)
			}
			if tt.secret == nil && !slices.ContainsFunc(s.Cluster.WorkersRefused, func(r cluster.Refusal) bool { return r.Name == "evil" }) {
				t.Fatalf("the forged registration was not refused: %+v", s.Cluster.WorkersRefused)
			}
		})
	}
}

// TestFreshRunDeletesOnlyLathesCheckpoints reruns a job in its directory:
// the earlier run's checkpoints and a killed write's temporary files go,
// files lathe did not write stay.
func TestFreshRunDeletesOnlyLathesCheckpoints(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	if _, err := Execute(context.Background(), load(t), Options{RunDir: dir, Threads: 2}); err != nil {
		t.Fatal(err)
	}
	cdir := filepath.Join(dir, rundir.CheckpointDir)
	old, _ := rundir.CheckpointFiles(cdir)
	if len(old) == 0 {
		t.Fatal("the first run wrote no checkpoint")
	}
	mine := map[string]string{"mine.txt": "notes", "my-favourite.arrow": "keep", "step-old.arrow.bak": "bak", "step-12.arrow": "short"}
	for n, b := range mine {
		os.WriteFile(filepath.Join(cdir, n), []byte(b), 0o644)
	}
	// What a SIGKILL mid-write leaves.
	for _, n := range []string{filepath.Join(cdir, ".step-000000099.arrow.tmp-123"), filepath.Join(dir, ".summary.json.tmp-9")} {
		os.WriteFile(n, []byte("torn"), 0o644)
	}
	// A rerun that also checkpoints every 7 steps.
	j := load(t)
	j.Checkpoint.EverySteps = 7
	if _, err := Execute(context.Background(), j, Options{RunDir: dir, Threads: 2}); err != nil {
		t.Fatal(err)
	}
	for n, b := range mine {
		if got, err := os.ReadFile(filepath.Join(cdir, n)); err != nil || string(got) != b {
			t.Errorf("%s: %q, %v", n, got, err)
		}
	}
	now, _ := rundir.CheckpointFiles(cdir)
	for _, n := range old {
		if !slices.Contains(now, n) {
			continue
		}
		if f, err := checkpoint.Read(filepath.Join(cdir, n)); err != nil || f.Job != "tiny" {
			t.Errorf("%s: %v", n, err)
		}
	}
	ents, _ := os.ReadDir(cdir)
	for _, e := range ents {
		if checkpoint.IsTemp(e.Name()) {
			t.Errorf("temporary file %s survived", e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ".summary.json.tmp-9")); err == nil {
		t.Error("a temporary file in the run directory survived")
	}
}

// TestCheckpointStateIsRangeChecked: a checkpoint whose position no run of
// the recipe could have written is refused, naming the field.
func TestCheckpointStateIsRangeChecked(t *testing.T) {
	j := load(t, "epochs=2")
	spe := data.Steps(data.TrainSize-j.Validation, j.Batch)
	good := trainer.Snapshot{Epoch: 1, StepInEpoch: 3, Step: int64(spe + 3), SamplesSeen: int64(spe+3) * int64(j.Batch), History: make([]trainer.EpochMetrics, 1)}
	if err := checkSnapshot(&good, j); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		spoil func(*trainer.Snapshot)
		want  string
	}{
		{"negative step in epoch", func(s *trainer.Snapshot) { s.StepInEpoch = -1 }, "step_in_epoch -1"},
		{"step in epoch past the epoch", func(s *trainer.Snapshot) { s.StepInEpoch = spe }, "step_in_epoch"},
		{"epoch beyond the recipe", func(s *trainer.Snapshot) { s.Epoch = 7 }, "epoch 7 outside [0, 2]"},
		{"step beyond its epoch", func(s *trainer.Snapshot) { s.Step += 500 }, "step"},
		{"samples", func(s *trainer.Snapshot) { s.SamplesSeen = 5 }, "samples_seen 5"},
		{"optimizer steps", func(s *trainer.Snapshot) { s.OptimizerSteps = -2 }, "optimizer_steps -2"},
		{"history", func(s *trainer.Snapshot) { s.History = make([]trainer.EpochMetrics, 4) }, "4 epochs of history"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.spoil(&s)
			if err := checkSnapshot(&s, j); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
		})
	}
}

// TestRunMemoryIsCheckedBeforehand: a run whose estimated memory exceeds
// the machine's is refused by the dry run (lint) and by the run, with the
// estimate and the machine's memory in the error.
func TestRunMemoryIsCheckedBeforehand(t *testing.T) {
	defer func(f func() int64) { memoryBytes = f }(memoryBytes)
	memoryBytes = func() int64 { return 1 << 30 }
	src := strings.Replace(recipe, "hidden = [32]", "hidden = [4096, 4096, 4096]", 1)
	j, err := recipes.Parse([]byte(src), "big.hcl", []string{"batch=10000"})
	if err != nil {
		t.Fatal(err)
	}
	want := "the run needs about 1.6 GiB (36818954 parameters, batch 10000), and this machine has 1.0 GiB"
	if err := DryRun(io.Discard, j); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "big.hcl:") {
		t.Fatalf("dry run: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "run")
	if _, err := Execute(context.Background(), j, Options{RunDir: dir}); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("run: %v", err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("a refused run left its directory")
	}
}

// TestPlanChecksNames: the names recipes/ decodes without knowing them —
// dataset, architecture, optimizer, schedule — are checked by the plan,
// pointing at the recipe; a run and a dry run refuse them before anything
// is written.
func TestPlanChecksNames(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"unknown dataset", strings.Replace(recipe, "validation = 50000", "validation = 50000\n  dataset = \"cifar\"", 1), `tiny.hcl:14,13: unknown value; dataset = "cifar"; allowed: mnist, fashion-mnist`},
		{"unknown arch", strings.Replace(recipe, `"mlp"`, `"vgg"`, 1), `tiny.hcl:15,14: unknown value; model.arch = "vgg"`},
		{"unknown optimizer", strings.Replace(recipe, `"sgd"`, `"lion"`, 1), `tiny.hcl:18,13: unknown optimizer; optimizer.kind = "lion"; allowed: sgd, adam, adamw`},
		{"unknown schedule", strings.Replace(recipe, "lr = var.lr", "lr = var.lr\n    lr_schedule = \"warp\"", 1), `tiny.hcl:20,19: unknown value; optimizer.lr_schedule = "warp"`},
		{"two hidden on lenet5", strings.Replace(recipe, `arch   = "mlp"`, `arch   = "lenet5"`, 1), "lenet5 has two convolutions and one hidden fully connected layer"},
		{"teacher arch", withBlock("teacher {\n    arch = \"vit\"\n    epochs = 1\n  }"), `tiny.hcl:15,12: unknown value; teacher.arch = "vit"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Contains(tc.name, "lenet5") {
				tc.src = strings.Replace(tc.src, "hidden = [32]", "hidden = [10, 20]", 1)
			}
			j, err := recipes.Parse([]byte(tc.src), "tiny.hcl", nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := Check(j); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
			if err := DryRun(io.Discard, j); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("dry run: %v", err)
			}
			dir := filepath.Join(t.TempDir(), "run")
			if _, err := Execute(context.Background(), j, Options{RunDir: dir}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run: %v", err)
			}
			if _, err := os.Stat(dir); err == nil {
				t.Fatal("a refused run made its directory")
			}
		})
	}
}
