package report_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/lathe-ml/lathe/report"
)

// A metrics.csv read by columns, as the report and the live page read it.
func ExampleReadTable() {
	dir, _ := os.MkdirTemp("", "lathe-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "metrics.csv")
	os.WriteFile(path, []byte("epoch,val_accuracy,sparsity_fc1\n1,0.91,0\n2,0.95,0.5\n3,0.9"), 0o644) // the last row cut short
	t, err := report.ReadTable(path)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(t.Rows, t.Col("val_accuracy"), t.Partial)
	// Output: 2 [0.91 0.95] true
}

// Write makes a run directory's report: report.html and its plots beside it.
func ExampleWrite() {
	rep, err := report.Write("runs/mnist-lenet300", report.Options{Runtime: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range rep.Figures {
		fmt.Println(f.Name, f.Points, f.File)
	}
}
