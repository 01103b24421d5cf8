// Command dataset-dump writes one of lathe's datasets as raw files, so
// that scripts outside Go (the PyTorch fixtures of onnx/testdata) train
// and test on exactly the samples lathe reads:
//
//	go run ./bench/dataset-dump -dataset langid -o /tmp/langid
//
// writes train.x and test.x (each sample's Rows·Cols bytes: pixels, or a
// text window's bytes, 0 after its end), train.y and test.y (one byte per
// label) and meta.json (rows, cols, classes, class names).
package main

import (
	"encoding/json"
	"flag"
	"log"
	"os"
	"path/filepath"

	"github.com/lathe-ml/lathe/data"
)

func main() {
	dataset := flag.String("dataset", "langid", "a dataset lathe reads (data.Datasets)")
	dir := flag.String("data-dir", "", "its folder (default: where it is installed)")
	out := flag.String("o", "", "the folder to write (required)")
	flag.Parse()
	if *out == "" {
		log.Fatal("usage: dataset-dump -dataset D -o DIR")
	}
	train, test, err := data.Load(*dataset, *dir)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	for name, b := range map[string][]byte{"train.x": train.Images, "train.y": train.Labels, "test.x": test.Images, "test.y": test.Labels} {
		if err := os.WriteFile(filepath.Join(*out, name), b, 0o644); err != nil {
			log.Fatal(err)
		}
	}
	meta, _ := json.MarshalIndent(map[string]any{"dataset": *dataset, "rows": train.Rows, "cols": train.Cols, "classes": train.Classes,
		"class_names": train.ClassNames, "train": train.Len(), "test": test.Len()}, "", "  ")
	if err := os.WriteFile(filepath.Join(*out, "meta.json"), meta, 0o644); err != nil {
		log.Fatal(err)
	}
	log.Printf("%s: %d training and %d test samples of %d×%d in %s", *dataset, train.Len(), test.Len(), train.Rows, train.Cols, *out)
}
