package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/cluster"
)

func TestUsageAndRecipeErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.hcl")
	os.WriteFile(bad, []byte("job \"x\" {\n  batch = 0\n  model {\n    arch = \"lenet300\"\n  }\n}\n"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no recipe", nil, 2, "usage: coordinator"},
		{"stray argument", []string{"--recipe", bad, "extra"}, 2, `unexpected argument "extra"`},
		{"negative threads", []string{"--recipe", bad, "--threads", "-3"}, 2, "--threads -3"},
		{"negative workers", []string{"--recipe", bad, "--workers", "-5"}, 2, "--workers -5"},
		{"negative checkpoint steps", []string{"--recipe", bad, "--checkpoint-every-steps", "-1"}, 2, "--checkpoint-every-steps -1"},
		{"bogus log level", []string{"--recipe", bad, "--log-level", "bogus"}, 2, `--log-level "bogus"`},
		{"unknown data plane", []string{"--recipe", bad, "--data-plane", "carrier-pigeon"}, 2, `--data-plane: cluster: data plane "carrier-pigeon"`},
		{"unknown peer TLS", []string{"--recipe", bad, "--peer-tls", "maybe"}, 2, `--peer-tls: cluster: peer TLS "maybe": auto, on or off`},
		{"two resumes", []string{"--recipe", bad, "--resume", "--resume-from", "x.arrow"}, 2, "--resume and --resume-from"},
		{"unknown device in a dry run", []string{"--recipe", "../../recipes/mnist-lenet300.hcl", "--device", "tpu", "--dry-run"}, 2, `--device "tpu"`},
		{"missing file", []string{"--recipe", "nope.hcl"}, 1, "nope.hcl"},
		{"bad value", []string{"--recipe", bad}, 1, "bad.hcl:2,11: value out of range; batch = 0"},
		{"unknown var", []string{"--recipe", bad, "-var", "epochs=3"}, 1, "declares no variable \"epochs\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := realMain(tc.args, &stderr); code != tc.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr lacks %q:\n%s", tc.want, stderr.String())
			}
		})
	}
}

func TestWorkerRatesShowTrainingWorkers(t *testing.T) {
	ws := []cluster.WorkerInfo{{State: "training", SamplesPerSecond: 1234.4}, {State: "lost", SamplesPerSecond: 99}, {State: "training"}}
	ws[0].Name, ws[1].Name, ws[2].Name = "a", "b", "c"
	if got := workerRates(ws); got != "a 1234/s c 0/s" {
		t.Fatalf("%q", got)
	}
	ws[0].Share, ws[2].Share = 13, 3
	if got := workerRates(ws); got != "a 1234/s ×13 c 0/s ×3" {
		t.Fatalf("split by speed: %q", got)
	}
}
