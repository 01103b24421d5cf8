package data

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestTextDirClasses: one class per file in name order, paragraphs as
// documents, each paragraph's windows on one side of the split.
func TestTextDirClasses(t *testing.T) {
	dir := t.TempDir()
	para := func(word string, n int) string {
		var ps []string
		for i := range n {
			ps = append(ps, strings.Repeat(word+" ", 3+i%20)+strconv.Itoa(i))
		}
		return strings.Join(ps, "\n\n")
	}
	for name, text := range map[string]string{"b-second.txt": para("qpq", 300), "a-first.txt": para("xyx", 300)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	train, test, counts, err := LoadTextDir(dir, TextOptions{Window: 16, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if counts[0].Class != "a-first" || counts[1].Class != "b-second" || counts[0].TrainDocs+counts[0].TestDocs != 300 {
		t.Fatalf("counts %+v", counts)
	}
	if train.Classes != 2 || test.Len() == 0 || train.Len() != counts[0].Train+counts[1].Train {
		t.Fatalf("%d classes, %d test and %d training samples", train.Classes, test.Len(), train.Len())
	}
	for i := range train.Len() {
		w := train.Images[i*16 : (i+1)*16]
		if other := []string{"qp", "xy"}[train.Labels[i]]; bytes.ContainsAny(w, other) {
			t.Fatalf("sample %d labelled %d: %q", i, train.Labels[i], w)
		}
	}
}

// TestTextLoadersRefuseBadInput name the file and what is wrong.
func TestTextLoadersRefuseBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("a.txt", "some text\n")
	if _, _, _, err := LoadTextDir(dir, TextOptions{}); err == nil || !strings.Contains(err.Error(), "at least 2") {
		t.Fatalf("one class: %v", err)
	}
	empty := write("b.txt", " \n\n ")
	if _, _, _, err := LoadTextDir(dir, TextOptions{}); err == nil || !strings.Contains(err.Error(), empty+" holds no text") {
		t.Fatalf("an empty class: %v", err)
	}
	bad := write("b.txt", "ok\xffno")
	if _, _, _, err := LoadTextDir(dir, TextOptions{}); err == nil || !strings.Contains(err.Error(), bad+": byte offset 2 is not UTF-8") {
		t.Fatalf("not UTF-8: %v", err)
	}
	if _, err := LoadTextFile(filepath.Join(dir, "none.txt")); !errors.Is(err, ErrMissing) {
		t.Fatalf("a missing file: %v", err)
	}
	if _, err := LoadTextFile(write("empty.txt", "\n")); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("an empty file: %v", err)
	}
	if _, err := LoadTextFile(write("short.txt", "one line only\n")); err == nil || !strings.Contains(err.Error(), "too few lines") {
		t.Fatalf("one line: %v", err)
	}
}

// TestTextFileSplits: 80 / 10 / 10 at line ends, nothing lost.
func TestTextFileSplits(t *testing.T) {
	var b strings.Builder
	for i := range 1000 {
		b.WriteString(strings.Repeat("x", 1+i%37))
		b.WriteByte('\n')
	}
	p := filepath.Join(t.TempDir(), "book.txt")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadTextFile(p)
	if err != nil {
		t.Fatal(err)
	}
	n := float64(b.Len())
	if c.Name != "book" || string(c.Train)+string(c.Val)+string(c.Test) != b.String() ||
		!bytes.HasSuffix(c.Train, []byte("\n")) || !bytes.HasSuffix(c.Val, []byte("\n")) ||
		float64(len(c.Train)) < 0.79*n || float64(len(c.Test)) < 0.09*n {
		t.Fatalf("splits of %d, %d, %d bytes", len(c.Train), len(c.Val), len(c.Test))
	}
}

// TestTrainWindows: a cap on the training documents' windows gives more
// training windows from the long documents and leaves the test split as
// it is; a dataset that is not a text classification set refuses it.
func TestTrainWindows(t *testing.T) {
	dir := t.TempDir()
	for name, word := range map[string]string{"a.txt": "xyx", "b.txt": "qpq"} {
		var ps []string
		for i := range 200 {
			ps = append(ps, strings.Repeat(word+" ", 2+i%200)+strconv.Itoa(i))
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Join(ps, "\n\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	train4, test4, err := LoadWith("text", dir, FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	train16, test16, err := LoadWith("text", dir, FileOptions{TrainWindows: 16})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(test4.Images, test16.Images) || !bytes.Equal(test4.Labels, test16.Labels) {
		t.Fatal("train_windows changed the test split")
	}
	if train16.Len() <= train4.Len() {
		t.Fatalf("16 windows per training document: %d samples, 4: %d", train16.Len(), train4.Len())
	}
	train1, _, err := LoadWith("text", dir, FileOptions{TrainWindows: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, _, counts, err := LoadTextDir(dir, TextOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if docs := counts[0].TrainDocs + counts[1].TrainDocs; train1.Len() != docs {
		t.Fatalf("one window per training document: %d samples of %d documents", train1.Len(), docs)
	}
	if _, _, err := LoadWith("mnist", "", FileOptions{TrainWindows: 8}); err == nil || !strings.Contains(err.Error(), "train_windows") {
		t.Fatalf("mnist with train_windows: %v", err)
	}
}
