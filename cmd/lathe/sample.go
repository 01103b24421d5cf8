package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/infer"
)

// sample prints text a language model file writes after a prompt.
func sample(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sample", flag.ContinueOnError)
	fs.SetOutput(stderr)
	prompt := fs.String("prompt", "", "the text to continue (default: a new line)")
	n := fs.Int("bytes", 400, "bytes to write")
	temperature := fs.Float64("temperature", 0.8, "softmax temperature (0: always the most likely byte)")
	seed := fs.Uint64("seed", 1, "the draws' seed")
	path, err := parse(fs, args, "model file")
	if err != nil {
		return err
	}
	if *n < 0 || *n > 1<<20 {
		return fmt.Errorf("--bytes %d: between 0 and %d", *n, 1<<20)
	}
	f, err := checkpoint.Read(path)
	if err != nil {
		return err
	}
	m, err := infer.Load(f, cpu.New(cpu.Options{Threads: 1, Logger: hclog.NewNullLogger()}))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	out, err := m.Sample([]byte(*prompt), *n, *temperature, *seed)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	fmt.Fprintf(stdout, "%s%s\n", *prompt, out)
	return nil
}
