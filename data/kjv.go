package data

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
)

// Corpus is a text for character-level language modelling, split into
// training, validation and test bytes (UTF-8).
type Corpus struct {
	Name                string
	Train, Val, Test    []byte
	ValBooks, TestBooks []string
}

// KJV's held-out books: whole books, so that no verse of them is trained on.
var (
	KJVValBooks  = []string{"Prv", "Rom"}  // Proverbs, Romans
	KJVTestBooks = []string{"Isa", "John"} // Isaiah, John
)

// KJVProgram is the program of Debian's bible-kjv that prints the text
// (from bible-kjv-text's /usr/lib/bible.data).
var KJVProgram = "bible"

var verseLine = regexp.MustCompile(`^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$`)

// LoadKJV reads the King James Bible as the bible program prints it
// (`bible -f Gen1:1-Rev22:21`: one verse a line, "Book chapter:verse text")
// and splits it by book: KJVValBooks for validation, KJVTestBooks for test,
// the rest for training. Each verse's text (without its reference) ends
// with a newline, in canonical order.
func LoadKJV() (*Corpus, error) {
	out, err := exec.Command(KJVProgram, "-f", "Gen1:1-Rev22:21").Output()
	if errors.Is(err, exec.ErrNotFound) {
		return nil, fmt.Errorf("%w: kjv: the %s program is missing: apt-get install bible-kjv bible-kjv-text", ErrMissing, KJVProgram)
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
		}
		return nil, fmt.Errorf("data: kjv: %s -f Gen1:1-Rev22:21: %w", KJVProgram, err)
	}
	return parseKJV(out)
}

// parseKJV splits the bible program's output into a Corpus.
func parseKJV(out []byte) (*Corpus, error) {
	c := &Corpus{Name: "kjv", ValBooks: KJVValBooks, TestBooks: KJVTestBooks}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		m := verseLine.FindSubmatch(sc.Bytes())
		if m == nil {
			return nil, fmt.Errorf("data: kjv: line %d of the bible program's output is not a verse: %.60q", line, sc.Bytes())
		}
		book := string(m[1])
		seen[book] = true
		dst := &c.Train
		switch {
		case slices.Contains(c.ValBooks, book):
			dst = &c.Val
		case slices.Contains(c.TestBooks, book):
			dst = &c.Test
		}
		*dst = append(append(*dst, m[4]...), '\n')
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("data: kjv: %w", err)
	}
	for _, b := range append(slices.Clone(c.ValBooks), c.TestBooks...) {
		if !seen[b] {
			return nil, fmt.Errorf("data: kjv: the bible program printed no verse of %s (%d lines)", b, line)
		}
	}
	return c, nil
}

// KJVContext is the bytes of context a window of the King James Bible
// holds (the shared PyTorch anchor's CharLM's).
const KJVContext = 128

// Windows cuts text into a language model's samples: non-overlapping
// windows of n bytes, each byte labelled with the byte that follows it (so
// a window reads n+1 bytes; the text's last bytes that fill no window are
// left out). An epoch over them is one pass over the text.
func Windows(name string, text []byte, n int) *Set {
	k := max(0, (len(text)-1)/n)
	s := &Set{Name: name, Rows: 1, Cols: n, Classes: 256, Positions: n, Images: make([]byte, 0, k*n), Labels: make([]byte, 0, k*n)}
	for w := range k {
		s.Images = append(s.Images, text[w*n:(w+1)*n]...)
		s.Labels = append(s.Labels, text[w*n+1:(w+1)*n+1]...)
	}
	return s
}

// Sets are the corpus's training, validation and test windows of n bytes.
func (c *Corpus) Sets(n int) (train, val, test *Set) {
	return Windows(c.Name+"/train", c.Train, n), Windows(c.Name+"/val", c.Val, n), Windows(c.Name+"/test", c.Test, n)
}
