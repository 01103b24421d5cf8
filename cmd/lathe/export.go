package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/rundir"
)

// export writes a model file in another format; ONNX is the one there is.
func export(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("onnx", "", "write an ONNX model to this path (required)")
	int8 := fs.Bool("int8", false, "store 4-bit weights as INT8 (opset 17) instead of INT4 (opset 21), for engines without 4-bit types")
	qdq := fs.Bool("qdq", false, "write quantized activations as QuantizeLinear/DequantizeLinear pairs (for engines that fuse them) instead of lathe's integer arithmetic")
	path, err := parse(fs, args, "model file")
	if err != nil {
		return err
	}
	if *out == "" {
		fmt.Fprintln(stderr, "lathe export: --onnx OUT.onnx is required")
		fs.Usage()
		return errUsage
	}
	if err := checkOutput(*out, path, "--onnx", "an ONNX model", looksONNX); err != nil {
		return err
	}
	f, err := readModel(path, "")
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	info, err := infer.ExportONNX(f, &buf, infer.ONNXOptions{Int8: *int8, QDQ: *qdq, Producer: rundir.Version})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	// Written whole or not at all: an earlier file at OUT survives a failure.
	if err := checkpoint.WriteAtomic(*out, buf.Bytes()); err != nil {
		return fmt.Errorf("--onnx: %w", err)
	}
	fmt.Fprintf(stdout, "%s: ONNX opset %d, %d nodes, %d bytes (model file %d bytes)", *out, info.Opset, info.Nodes, info.Bytes, f.Bytes)
	if len(info.Quantized) > 0 {
		fmt.Fprintf(stdout, "; quantized weights:")
		for _, l := range info.Quantized {
			fmt.Fprintf(stdout, " %s %d-bit", l, info.WeightBits[l])
		}
	}
	if len(info.ActQuant) > 0 {
		fmt.Fprintf(stdout, "; quantized activations after %v", info.ActQuant)
	}
	if len(info.Integer) > 0 {
		fmt.Fprintf(stdout, "; on integer codes %v", info.Integer)
	}
	fmt.Fprintln(stdout)
	return nil
}

// checkOutput refuses to write out (given by flag) over the input, over a
// directory, or over an existing file that is not what the command writes
// (kind, told by looks from its first bytes).
func checkOutput(out, in, flag, kind string, looks func(head []byte) bool) error {
	st, err := os.Stat(out)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", flag, out, err)
	}
	if st.IsDir() {
		return fmt.Errorf("%s %s: a directory; give a file path", flag, out)
	}
	if ist, err := os.Stat(in); err == nil && os.SameFile(st, ist) {
		return fmt.Errorf("%s %s: the input file itself; give another path", flag, out)
	}
	head := make([]byte, 16)
	fh, err := os.Open(out)
	if err != nil {
		return fmt.Errorf("%s %s: %w", flag, out, err)
	}
	n, _ := io.ReadFull(fh, head)
	fh.Close()
	if !looks(head[:n]) {
		return fmt.Errorf("%s %s: exists and is not %s; it is left as it is (remove it, or give another path)", flag, out, kind)
	}
	return nil
}

// looksONNX says whether a file's first bytes can start an ONNX model (a
// protobuf ModelProto: ir_version, field 1, comes first as PyTorch's and
// lathe's exports write it).
func looksONNX(head []byte) bool { return len(head) >= 2 && head[0] == 0x08 }
