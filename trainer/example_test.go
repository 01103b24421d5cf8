package trainer_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/schedule"
	"github.com/lathe-ml/lathe/trainer"
)

// A network defined in Go, trained on real MNIST while its first layer is
// pruned to 80 % gradually (AGP over the first epoch), written as a model
// file and run in the inference runtime.
func Example() {
	net := graph.MLP(graph.Shape{H: 28, W: 28, C: 1}, []int{64}, 10, 0)
	m, err := model.FromNetwork(net, "uniform", 1)
	if err != nil {
		fmt.Println(err)
		return
	}
	train, test, err := data.Load("mnist", "")
	if err != nil {
		fmt.Println(err)
		return
	}
	train = train.Slice("train", 0, 10000)
	var sizes []int
	for _, p := range m.Params {
		sizes = append(sizes, p.Size())
	}
	opt, err := trainer.NewOptimizer(trainer.OptimConfig{Kind: "sgd", Momentum: 0.9}, sizes)
	if err != nil {
		fmt.Println(err)
		return
	}
	eng := cpu.New(cpu.Options{Threads: 1})
	tr, err := trainer.New(trainer.Config{Model: m, Engine: eng, Train: train, Test: test, Batch: 100, Epochs: 2, Seed: 1, Optimizer: opt,
		Policies: []trainer.Policy{
			&trainer.LRPolicy{Schedule: schedule.LR{Kind: "constant", Base: 0.05, Total: 1}},
			&trainer.PrunePolicy{Label: "prune", Layers: []string{"fc1"}, Granularity: compress.Element,
				Schedule: schedule.Sparsity{Kind: "agp", Final: 0.8, Start: 0, End: 10000, Every: 1000}},
		}})
	if err != nil {
		fmt.Println(err)
		return
	}
	res, err := tr.Run(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("fc1 %.0f %% zero, test accuracy over 85 %%: %v\n", 100*m.Layers()[0].Sparsity, res.TestAccuracy > 0.85)

	// The model file, and the inference runtime on it.
	f, err := rundir.ExportModel(m, "example", "mnist", data.FileOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	dir, _ := os.MkdirTemp("", "lathe-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "model.arrow")
	if err := checkpoint.Write(path, f); err != nil {
		fmt.Println(err)
		return
	}
	back, err := checkpoint.Read(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	rt, err := infer.Load(back, eng)
	if err != nil {
		fmt.Println(err)
		return
	}
	classes, err := infer.Predict(rt, test, 1000)
	if err != nil {
		fmt.Println(err)
		return
	}
	right := 0
	for i, c := range classes {
		if c == int(test.Labels[i]) {
			right++
		}
	}
	fmt.Printf("the runtime agrees with training: %v\n", float64(right)/float64(len(classes)) == res.TestAccuracy)
	// Output:
	// fc1 80 % zero, test accuracy over 85 %: true
	// the runtime agrees with training: true
}

// Three micro-shards' gradients of one tensor, summed exactly in fixed
// point: in one pass (AddFixedSum), or one vector after the other in any
// order (AddFixed) — the same integers, so whoever computes which
// micro-shard, the reduced gradient has the same bits.
func ExampleAddFixedSum() {
	shards := [][]float32{{0.1, -2.5, 1e-7}, {0.2, 0.5, 3e-7}, {0.3, 2, -4e-7}}
	once := make([]int64, 3)
	if err := trainer.SetFixedSum(once, shards); err != nil {
		panic(err)
	}
	reversed := make([]int64, 3)
	for k := len(shards) - 1; k >= 0; k-- {
		if err := trainer.AddFixed(reversed, shards[k]); err != nil {
			panic(err)
		}
	}
	fmt.Println(once[0] == reversed[0] && once[1] == reversed[1] && once[2] == reversed[2])
	for _, q := range once {
		fmt.Printf("%.7g ", trainer.FromFixed(q))
	}
	fmt.Println()
	// Output:
	// true
	// 0.6 0 0
}
