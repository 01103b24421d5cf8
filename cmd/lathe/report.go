package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/lathe-ml/lathe/report"
)

func makeReport(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "the HTML file (default RUN_DIR/report.html); plots are written beside it as PNG")
	noRuntime := fs.Bool("no-runtime", false, "do not load the model in lathe's runtime (no kernel latencies)")
	threads := fs.Int("threads", 0, "the runtime's threads (default: all cores)")
	dir, err := parse(fs, args, "run directory")
	if err != nil {
		return err
	}
	t0 := time.Now()
	rep, err := report.Write(dir, report.Options{Out: *out, Runtime: !*noRuntime, Threads: *threads})
	if err != nil {
		return err
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(stderr, "note:", n)
	}
	fmt.Fprintf(stdout, "%s: %d plots, %d bytes, %.2f s\n", rep.Out, len(rep.Figures), rep.Bytes, time.Since(t0).Seconds())
	for _, f := range rep.Figures {
		fmt.Fprintf(stdout, "  %-16s %5d points  %s\n", f.Name, f.Points, f.File)
	}
	return nil
}
