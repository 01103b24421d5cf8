package run

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
)

// userRecipe trains an MLP on a user's files of the given format.
func userRecipe(format, dir string) string {
	return fmt.Sprintf(`job "user" {
  dataset    = %q
  data_dir   = %q
  epochs     = 3
  batch      = 32
  validation = 40
  model {
    arch   = "mlp"
    hidden = [16]
  }
  optimizer "adam" {
    lr = 0.01
  }
}`, format, dir)
}

// TestUserCSV trains on a CSV table (two separable classes: the sign of
// a feature sum) and learns it; the model file takes the table's width.
func TestUserCSV(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(3, 4))
	for _, split := range []struct {
		name string
		n    int
	}{{"train.csv", 400}, {"test.csv", 100}} {
		var b strings.Builder
		b.WriteString("x1,x2,x3,label\n")
		for range split.n {
			x := [3]float64{r.NormFloat64(), r.NormFloat64(), r.NormFloat64()}
			label := 0
			if x[0]+x[1]-x[2] > 0 {
				label = 1
			}
			fmt.Fprintf(&b, "%.4f,%.4f,%.4f,%d\n", x[0], x[1], x[2], label)
		}
		if err := os.WriteFile(filepath.Join(dir, split.name), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	j, err := recipes.Parse([]byte(userRecipe("csv", dir)), "user.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	run := t.TempDir()
	sum, err := Execute(context.Background(), j, Options{RunDir: run, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if sum.TestAccuracy < 0.9 || sum.ParamsTotal != 3*16+16+16*2+2 {
		t.Errorf("a separable table: test accuracy %v, %d parameters", sum.TestAccuracy, sum.ParamsTotal)
	}
	// Without test.csv, test_fraction holds a test split out of train.csv:
	// the model file records it, and the runtime on that split scores what
	// the run did.
	one := t.TempDir()
	if err := os.Rename(filepath.Join(dir, "train.csv"), filepath.Join(one, "train.csv")); err != nil {
		t.Fatal(err)
	}
	held := strings.Replace(userRecipe("csv", one), "  validation = 40", "  validation = 40\n  test_fraction = 0.2\n  split_seed = 3", 1)
	if j, err = recipes.Parse([]byte(held), "user.hcl", nil); err != nil {
		t.Fatal(err)
	}
	run = t.TempDir()
	if sum, err = Execute(context.Background(), j, Options{RunDir: run, Threads: 2}); err != nil {
		t.Fatal(err)
	}
	mf, st := modelFileOf(t, run)
	_, test, err := data.LoadWith("csv", one, st.Files)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := infer.Load(mf, cpu.New(cpu.Options{Threads: 2}))
	if err != nil {
		t.Fatal(err)
	}
	acc, err := infer.Accuracy(rt, test, 100)
	if err != nil {
		t.Fatal(err)
	}
	if st.Files != (data.FileOptions{TestFraction: 0.2, Seed: 3}) || test.Len() != 80 || sum.TestAccuracy < 0.75 || acc != sum.TestAccuracy {
		t.Errorf("held out: split %+v, %d test samples, the run's accuracy %v, the runtime's on the recorded split %v", st.Files, test.Len(), sum.TestAccuracy, acc)
	}
	// Augmenting a table is refused, naming the field.
	bad := strings.Replace(userRecipe("csv", dir), "  model {", "  augment {\n    shift = 2\n  }\n  model {", 1)
	if j, err := recipes.Parse([]byte(bad), "user.hcl", nil); err == nil {
		if _, err = Execute(context.Background(), j, Options{RunDir: t.TempDir(), Threads: 2}); err == nil || !strings.Contains(err.Error(), "augment") {
			t.Errorf("augmenting a table: %v", err)
		}
	}
}

// TestUserImages trains on RGB image folders (the class is which channel
// is lit); the model file holds 3-channel inputs.
func TestUserImages(t *testing.T) {
	dir := t.TempDir()
	writeImageFolders(t, dir)
	j, err := recipes.Parse([]byte(userRecipe("images", dir)), "user.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	run := t.TempDir()
	sum, err := Execute(context.Background(), j, Options{RunDir: run, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	_, st := modelFileOf(t, run)
	if sum.TestAccuracy < 0.9 || st.Input.Channels != 3 || st.Input.Rows != 4 || st.Input.Classes != 3 {
		t.Errorf("RGB folders: test accuracy %v, input %+v", sum.TestAccuracy, st.Input)
	}
}

// writeImageFolders writes train/ and test/ folders of 4×4 RGB PNGs in
// three classes (red, green, blue: the lit channel).
func writeImageFolders(t *testing.T, dir string) {
	t.Helper()
	r := rand.New(rand.NewPCG(5, 6))
	for _, split := range []struct {
		name string
		n    int
	}{{"train", 120}, {"test", 30}} {
		for i := range split.n {
			class := i % 3
			img := image.NewRGBA(image.Rect(0, 0, 4, 4))
			for p := range 16 {
				v := [3]uint8{uint8(r.IntN(60)), uint8(r.IntN(60)), uint8(r.IntN(60))}
				v[class] += 150
				img.Set(p%4, p/4, color.RGBA{v[0], v[1], v[2], 255})
			}
			path := filepath.Join(dir, split.name, []string{"red", "green", "blue"}[class], fmt.Sprintf("%03d.png", i))
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := png.Encode(f, img); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
	}
}

// TestClusterShipsYourFiles: a cluster sends the user's files — an image
// folder's tree, a CSV table without its test file (test_fraction) — to
// its workers, which have no copy: the job trains on one worker and on two
// to the same weights, and scores what a run without workers scores.
func TestClusterShipsYourFiles(t *testing.T) {
	imgs, table := t.TempDir(), t.TempDir()
	writeImageFolders(t, imgs)
	var b strings.Builder
	b.WriteString("x1,x2,label\n")
	r := rand.New(rand.NewPCG(7, 8))
	for range 300 {
		x1, x2 := r.NormFloat64(), r.NormFloat64()
		label := 0
		if x1 > x2 {
			label = 1
		}
		fmt.Fprintf(&b, "%.4f,%.4f,%d\n", x1, x2, label)
	}
	if err := os.WriteFile(filepath.Join(table, "train.csv"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{
		userRecipe("images", imgs),
		strings.Replace(userRecipe("csv", table), "  validation = 40", "  validation = 40\n  test_fraction = 0.2", 1),
	} {
		j, err := recipes.Parse([]byte(src), "user.hcl", nil)
		if err != nil {
			t.Fatal(err)
		}
		local, err := Execute(context.Background(), j, Options{RunDir: t.TempDir(), Threads: 2})
		if err != nil {
			t.Fatal(err)
		}
		var digests []string
		for _, workers := range []int{1, 2} {
			tc := startCluster(t, workers)
			ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
			if err := tc.coord.WaitWorkers(ctx, workers); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			sum, err := Execute(ctx, j, Options{RunDir: dir, Cluster: tc.coord, Logger: testLog("run")})
			cancel()
			if err != nil {
				dumpCluster(t)
				t.Fatalf("%s, %d workers: %v", j.Dataset, workers, err)
			}
			if sum.Cluster == nil || sum.Cluster.Workers != workers || math.Abs(sum.TestAccuracy-local.TestAccuracy) > 0.05 {
				t.Errorf("%s, %d workers: cluster %+v, test accuracy %v (without workers %v)", j.Dataset, workers, sum.Cluster, sum.TestAccuracy, local.TestAccuracy)
			}
			digests = append(digests, weightsDigest(t, filepath.Join(dir, rundir.ModelFile)))
		}
		if digests[0] != digests[1] {
			t.Errorf("%s: one worker's weights %s, two workers' %s", j.Dataset, digests[0], digests[1])
		}
	}
}

// TestUserValidationFile: a folder with val.csv is the run's validation
// split (scored as such); a recipe that also asks for validation samples
// is refused at that line.
func TestUserValidationFile(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(9, 9))
	for name, n := range map[string]int{"train.csv": 300, "val.csv": 60, "test.csv": 60} {
		var b strings.Builder
		b.WriteString("x1,x2,label\n")
		for range n {
			x1, x2 := r.NormFloat64(), r.NormFloat64()
			label := 0
			if x1+x2 > 0 {
				label = 1
			}
			fmt.Fprintf(&b, "%.4f,%.4f,%d\n", x1, x2, label)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := recipes.Parse([]byte(userRecipe("csv", dir)), "user.hcl", nil); err == nil || !strings.Contains(err.Error(), "user.hcl:6,16") || !strings.Contains(err.Error(), "leave validation out") {
		t.Fatalf("validation beside val.csv: %v", err)
	}
	j, err := recipes.Parse([]byte(strings.Replace(userRecipe("csv", dir), "  validation = 40\n", "", 1)), "user.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Execute(context.Background(), j, Options{RunDir: t.TempDir(), Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if sum.ValAccuracy < 0.8 || sum.TestAccuracy < 0.8 {
		t.Errorf("validation %v, test %v", sum.ValAccuracy, sum.TestAccuracy)
	}
}

// modelFileOf reads a run directory's model file and its state.
func modelFileOf(t *testing.T, run string) (*checkpoint.File, *rundir.ModelState) {
	t.Helper()
	f, err := checkpoint.Read(filepath.Join(run, rundir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	_, st, err := rundir.LoadModel(f)
	if err != nil {
		t.Fatal(err)
	}
	return f, st
}

// TestValidationFractionRun: validation_fraction holds out that share of
// the training samples as the run's validation split (scored as such),
// and the model file records it with the test split's fraction.
func TestValidationFractionRun(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(5, 6))
	var b strings.Builder
	b.WriteString("x1,x2,label\n")
	for range 300 {
		x1, x2 := r.NormFloat64(), r.NormFloat64()
		label := 0
		if x1+x2 > 0 {
			label = 1
		}
		fmt.Fprintf(&b, "%.4f,%.4f,%d\n", x1, x2, label)
	}
	if err := os.WriteFile(filepath.Join(dir, "train.csv"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(userRecipe("csv", dir), "  validation = 40\n", "  test_fraction = 0.2\n  validation_fraction = 0.25\n", 1)
	j, err := recipes.Parse([]byte(src), "user.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	train, val, test, _, err := splits(j)
	if err != nil {
		t.Fatal(err)
	}
	if train.Len() != 180 || val.Len() != 60 || test.Len() != 60 {
		t.Fatalf("%d training, %d validation and %d test samples of 300", train.Len(), val.Len(), test.Len())
	}
	run := t.TempDir()
	sum, err := Execute(context.Background(), j, Options{RunDir: run, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if sum.ValAccuracy < 0.8 || sum.TestAccuracy < 0.8 {
		t.Errorf("validation %v, test %v", sum.ValAccuracy, sum.TestAccuracy)
	}
	if _, st := modelFileOf(t, run); st.Files.ValidationFraction != 0.25 || st.Files.TestFraction != 0.2 {
		t.Errorf("the model file records %+v", st.Files)
	}
}
