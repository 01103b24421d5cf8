package onnx

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzImport: any bytes are imported or refused with an error, never a
// panic (a model file is someone else's input).
func FuzzImport(f *testing.F) {
	paths, _ := filepath.Glob("testdata/*.op17.onnx")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Import(b, Options{})
		if err == nil && (m.File == nil || len(m.Net.Layers) == 0) {
			t.Fatal("imported without a model file or layers")
		}
	})
}
