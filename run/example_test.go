package run_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/run"
)

// A shipped recipe run from Go, shortened with its variables: the same
// job the coordinator runs, its files in the run directory.
func ExampleExecute() {
	dir, _ := os.MkdirTemp("", "lathe-example")
	defer os.RemoveAll(dir)
	job, err := recipes.Load("../recipes/mnist-lenet300.hcl", []string{"epochs=1", "batch=256"})
	if err != nil {
		log.Fatal(err)
	}
	sum, err := run.Execute(context.Background(), job, run.Options{RunDir: filepath.Join(dir, "run"), Threads: 2})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(sum.Job, sum.Epochs, sum.TestAccuracy > 0.8, sum.ModelBytes > 0)
	// Output: mnist-lenet300 1 true true
}
