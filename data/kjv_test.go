package data

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestKJVHoldsOutWholeBooks: the installed Bible split by book — no verse
// of Proverbs, Romans, Isaiah or John in training, each on its side.
func TestKJVHoldsOutWholeBooks(t *testing.T) {
	c, err := LoadKJV()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("train %d, validation %d, test %d bytes", len(c.Train), len(c.Val), len(c.Test))
	total := len(c.Train) + len(c.Val) + len(c.Test)
	if total < 4_000_000 || len(c.Test) < 150_000 || len(c.Val) < 100_000 {
		t.Fatalf("train %d, validation %d, test %d bytes", len(c.Train), len(c.Val), len(c.Test))
	}
	for _, tc := range []struct {
		verse string
		in    []byte
	}{ // first verses of John, Isaiah, Proverbs, Romans and Genesis
		{"In the beginning was the Word, and the Word was with God, and the Word was God.", c.Test},
		{"The vision of Isaiah the son of Amoz", c.Test},
		{"The proverbs of Solomon the son of David, king of Israel;", c.Val},
		{"Paul, a servant of Jesus Christ, called to be an apostle, separated unto the gospel", c.Val},
		{"In the beginning God created the heaven and the earth.", c.Train},
	} {
		if !bytes.Contains(tc.in, []byte(tc.verse)) {
			t.Errorf("%q not on its side", tc.verse)
		}
		if held := !strings.HasPrefix(tc.verse, "In the beginning God"); held && bytes.Contains(c.Train, []byte(tc.verse)) {
			t.Errorf("%q of a held-out book is in training", tc.verse)
		}
	}
	if bytes.Contains(c.Train, []byte("Ge1:1")) {
		t.Error("verse references left in the text")
	}
}

// TestKJVRefusesWhatIsMissing names the package to install, and a line
// that is not a verse.
func TestKJVRefusesWhatIsMissing(t *testing.T) {
	defer func(p string) { KJVProgram = p }(KJVProgram)
	KJVProgram = "no-such-bible-program"
	if _, err := LoadKJV(); !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "apt-get install bible-kjv") {
		t.Fatalf("error %v", err)
	}
	if _, err := parseKJV([]byte("Ge1:1 In the beginning.\nnot a verse\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("a stray line: %v", err)
	}
	if _, err := parseKJV([]byte("Ge1:1 In the beginning.\n")); err == nil || !strings.Contains(err.Error(), "Prv") {
		t.Fatalf("no held-out book: %v", err)
	}
}

// TestWindows: a language model's windows are non-overlapping, each byte
// labelled with the byte after it; the text's tail that fills no window
// is left out; a batch fills every position's label.
func TestWindows(t *testing.T) {
	text := []byte("abcdefghijk") // 11 bytes: windows of 4 read 5 bytes each
	s := Windows("w", text, 4)
	if s.Len() != 2 || s.LabelsPer() != 4 || string(s.Images) != "abcdefgh" || string(s.Labels) != "bcdefghi" {
		t.Fatalf("%d windows: images %q, labels %q", s.Len(), s.Images, s.Labels)
	}
	x, y := make([]float32, 4), make([]float32, 4)
	(&Batcher{Set: s}).Fill(x, y, []int{1}, 0)
	if y[0] != 'f' || y[3] != 'i' || x[0] != float32('e')*(1.0/255) {
		t.Fatalf("window 1: x %v, y %v", x, y)
	}
	if v := s.Slice("v", 1, 2); v.Len() != 1 || string(v.Labels) != "fghi" {
		t.Fatalf("slice: %q", v.Labels)
	}
	if Windows("short", []byte("abcd"), 4).Len() != 0 {
		t.Fatal("4 bytes make a window of 4 (it needs a fifth for its last label)")
	}
}

// TestBalancedWeights: N/(classes·n_c), 0 for a class the set lacks.
func TestBalancedWeights(t *testing.T) {
	s := &Set{Classes: 3, Labels: []byte{0, 0, 0, 1}}
	if w := BalancedWeights(s); w[0] != float32(4.0/9) || w[1] != float32(4.0/3) || w[2] != 0 {
		t.Fatalf("weights %v", w)
	}
}
