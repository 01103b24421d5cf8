package run

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/recipes"
)

// TestClusterCalibrates: a cluster's coordinator runs post_training's
// calibration passes on its workers — each layer's GPTQ Hessians and
// input sums (bias correction), then the activation ranges — and gets the
// file one process computes, with one worker and with two; a run on two
// workers trains from that file, which the coordinator sends its
// replicas.
func TestClusterCalibrates(t *testing.T) {
	const file = "../onnx/testdata/mnist_cnn.op17.onnx"
	src := strings.Replace(recipe, "    arch   = \"mlp\"\n    hidden = [32]\n", "    file = \""+file+"\"\n", 1)
	src = strings.Replace(src, "  optimizer", "  post_training {\n    bits            = 4\n    gptq            = true\n    activations     = 8\n"+
		"    bias_correction = true\n    samples         = 300\n  }\n  optimizer", 1)
	j, err := recipes.Parse([]byte(src), "tiny.hcl", []string{"lr=1e-9"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := RecipeModelFile(j)
	if err != nil {
		t.Fatal(err)
	}
	local, err := compressPost(j, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, err := checkpoint.Encode(local)
	if err != nil {
		t.Fatal(err)
	}
	_, test, err := data.Load("mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	im, err := infer.Load(local, cpu.New(cpu.Options{Threads: 2}))
	if err != nil {
		t.Fatal(err)
	}
	acc, err := infer.Accuracy(im, test, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, workers := range []int{1, 2} {
		tc := startCluster(t, workers)
		ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
		if err := tc.coord.WaitWorkers(ctx, workers); err != nil {
			t.Fatal(err)
		}
		got, per, err := postTrainOn(ctx, j, Options{Cluster: tc.coord}, testLog("coordinator"))
		if err != nil {
			dumpCluster(t)
			t.Fatalf("%d workers: %v", workers, err)
		}
		if len(per) != workers {
			t.Errorf("%d workers: the passes ran on %v", workers, per)
		}
		if string(got) != string(want) {
			t.Errorf("%d workers: the post-trained file (%d bytes) differs from one process's (%d bytes)", workers, len(got), len(want))
		}
		if workers == 2 {
			sum, err := Execute(ctx, j, Options{RunDir: t.TempDir(), Cluster: tc.coord, Logger: testLog("run")})
			if err != nil {
				dumpCluster(t)
				t.Fatal(err)
			}
			if sum.Cluster == nil || sum.Cluster.Workers != 2 || math.Abs(sum.TestAccuracy-acc) > 0.002 {
				t.Errorf("a run on the post-trained file at lr 1e-9: cluster %+v, test accuracy %v, the file's %v", sum.Cluster, sum.TestAccuracy, acc)
			}
		}
		cancel()
	}
}

// TestDryRunLeavesPostTraining: lint's dry run plans the model file's
// network and says what post_training will do, without compressing.
func TestDryRunLeavesPostTraining(t *testing.T) {
	const file = "../onnx/testdata/mnist_cnn.op17.onnx"
	src := strings.Replace(recipe, "    arch   = \"mlp\"\n    hidden = [32]\n", "    file = \""+file+"\"\n", 1)
	src = strings.Replace(src, "  optimizer", "  post_training {\n    bits    = 3\n    gptq    = true\n    samples = 40\n  }\n  optimizer", 1)
	j, err := recipes.Parse([]byte(src), "tiny.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := DryRun(&out, j); err != nil {
		t.Fatal(err)
	}
	if want := "post_training: " + j.Model.File + " compressed before the run on 40 calibration samples (3-bit weights by GPTQ; not run here)"; !strings.Contains(out.String(), want) {
		t.Errorf("the dry run says:\n%s\nwant %q", out.String(), want)
	}
	f, err := RecipeModelFile(j)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := postTrained.Load(postKey(j, f)); ok {
		t.Error("the dry run compressed the model file")
	}
}
