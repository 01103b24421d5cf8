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
