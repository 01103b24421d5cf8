package data

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// IDX is a decoded IDX file of unsigned bytes (type code 0x08).
type IDX struct {
	Dims []int  // e.g. [60000 28 28]
	Data []byte // row-major, len == product of Dims
}

// maxIDXBytes bounds what a header may announce, so a corrupt header cannot
// make the reader allocate without limit (1 GiB is far above any IDX dataset).
const maxIDXBytes = 1 << 30

// ReadIDX reads an IDX file, gzip-compressed or not. Errors name the path
// and the byte offset (in the decompressed stream) where decoding failed.
func ReadIDX(path string) (*IDX, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<16)
	var r io.Reader = br
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("data: %s: gzip header: %w", path, err)
		}
		defer zr.Close()
		r = zr
	}
	idx, err := decodeIDX(r)
	if err != nil {
		return nil, fmt.Errorf("data: %s: %w", path, err)
	}
	return idx, nil
}

type offsetErr struct {
	off int64
	msg string
}

func (e *offsetErr) Error() string { return fmt.Sprintf("byte offset %d: %s", e.off, e.msg) }

func decodeIDX(r io.Reader) (*IDX, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, &offsetErr{0, "truncated IDX header: " + describe(err)}
	}
	if hdr[0] != 0 || hdr[1] != 0 {
		return nil, &offsetErr{0, fmt.Sprintf("wrong magic %#02x%02x, want 0x0000 (not an IDX file)", hdr[0], hdr[1])}
	}
	if hdr[2] != 0x08 {
		return nil, &offsetErr{2, fmt.Sprintf("element type %#02x unsupported, want 0x08 (unsigned byte)", hdr[2])}
	}
	nd := int(hdr[3])
	if nd < 1 || nd > 4 {
		return nil, &offsetErr{3, fmt.Sprintf("%d dimensions, want 1 to 4", nd)}
	}
	dims := make([]int, nd)
	total := int64(1)
	for i := range dims {
		var b [4]byte
		off := int64(4 + 4*i)
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, &offsetErr{off, "truncated dimension: " + describe(err)}
		}
		d := int64(binary.BigEndian.Uint32(b[:]))
		if d == 0 {
			return nil, &offsetErr{off, fmt.Sprintf("dimension %d is zero", i)}
		}
		total *= d
		if total > maxIDXBytes {
			return nil, &offsetErr{off, fmt.Sprintf("announced size exceeds %d bytes", maxIDXBytes)}
		}
		dims[i] = int(d)
	}
	start := int64(4 + 4*nd)
	buf := make([]byte, total)
	n, err := io.ReadFull(r, buf)
	if err != nil {
		return nil, &offsetErr{start + int64(n), fmt.Sprintf("truncated data: want %d bytes after the header, got %d (%s)", total, n, describe(err))}
	}
	return &IDX{Dims: dims, Data: buf}, nil
}

func describe(err error) string {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "unexpected end of file"
	}
	return err.Error()
}
