// Package checkpoint writes and reads lathe's Arrow IPC files: model files
// (what inference needs, each tensor in its smallest exact encoding) and
// training checkpoints (everything a run needs to continue exactly). The
// format is docs/FORMAT.md.
package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// FormatVersion is the version of the file layout this package writes. A
// reader accepts files of its own version and older ones it knows; a newer
// version is refused with a message saying so (docs/FORMAT.md).
const FormatVersion = 1

// File kinds.
const (
	KindModel    = "model"          // what inference needs, compressed
	KindTraining = "training"       // everything a run needs to resume
	KindLogits   = "teacher-logits" // a teacher's logits for a training set (offline distillation)
)

// Schema metadata keys.
const (
	keyFormat        = "lathe.format"
	keyFormatVersion = "lathe.format_version"
	keyKind          = "lathe.kind"
	keyVersion       = "lathe.version"
	keyJob           = "lathe.job"
	keySHA           = "lathe.sha256"
	formatName       = "lathe"
	// digestPrefix starts the checksum's value, so that a reader finds
	// both copies (the schema is written at the start and in the footer)
	// in the raw bytes before parsing anything.
	digestPrefix = "sha256:"
)

// File is the content of one file.
type File struct {
	Kind          string
	Job           string
	Version       string // lathe version that wrote it
	FormatVersion int    // filled by Read
	// State is a JSON document: for training checkpoints the run's state,
	// for model files the architecture. Files hold it in a row of its own
	// (StateRow).
	State   []byte
	Tensors []*Tensor
	// Filled by Read and Encode.
	SHA256 string
	Bytes  int
}

// Tensor returns the named tensor, or nil.
func (f *File) Tensor(name string) *Tensor {
	for _, t := range f.Tensors {
		if t.Name == name {
			return t
		}
	}
	return nil
}

var schemaFields = []arrow.Field{
	{Name: "name", Type: arrow.BinaryTypes.String},
	{Name: "role", Type: arrow.BinaryTypes.String},
	{Name: "shape", Type: arrow.ListOf(arrow.PrimitiveTypes.Int64)},
	{Name: "encoding", Type: arrow.BinaryTypes.String},
	{Name: "index_format", Type: arrow.BinaryTypes.String},
	{Name: "value_format", Type: arrow.BinaryTypes.String},
	{Name: "count", Type: arrow.PrimitiveTypes.Int64},
	{Name: "bits", Type: arrow.PrimitiveTypes.Int8},
	{Name: "qmin", Type: arrow.PrimitiveTypes.Int32},
	{Name: "index", Type: arrow.BinaryTypes.Binary},
	{Name: "values", Type: arrow.ListOf(arrow.PrimitiveTypes.Float32)},
	{Name: "codes", Type: arrow.BinaryTypes.Binary},
	{Name: "scale", Type: arrow.ListOf(arrow.PrimitiveTypes.Float32)},
	{Name: "zero_point", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32)},
}

// Encode serializes a file: tensors of model files in their smallest exact
// encodings, those of training checkpoints densely (fast). It fills
// f.SHA256 and f.Bytes, and each tensor's storage fields.
func Encode(f *File) ([]byte, error) { return encodeFile(f, FormatVersion, "") }

// encodeFile is Encode with a given format version and, for tests, a
// column left out.
func encodeFile(f *File, version int, drop string) ([]byte, error) {
	if f.Kind != KindModel && f.Kind != KindTraining && f.Kind != KindLogits {
		return nil, fmt.Errorf("checkpoint: unknown kind %q", f.Kind)
	}
	rows := make([]*stored, len(f.Tensors))
	names := map[string]bool{}
	for i, t := range f.Tensors {
		if names[t.Name] || t.Name == StateRow {
			return nil, fmt.Errorf("checkpoint: two tensors named %q", t.Name)
		}
		names[t.Name] = true
		s, err := encode(t, f.Kind == KindModel && t.Role == RoleParam)
		if err != nil {
			return nil, fmt.Errorf("checkpoint: %w", err)
		}
		rows[i] = s
		t.Encoding, t.IndexFormat, t.ValueFormat, t.Bits, t.StoredBytes = s.encoding, s.indexFormat, s.valueFormat, int(s.bits), s.size()
	}
	// The state document is a row of its own (role meta): schema metadata
	// is stored twice in an Arrow file, rows once.
	rows = append(rows, &stored{name: StateRow, role: RoleMeta, shape: []int64{int64(len(f.State))}, encoding: EncJSON,
		indexFormat: IndexNone, valueFormat: ValueUTF8, count: int64(len(f.State)), codes: f.State})
	placeholder := digestPrefix + string(bytes.Repeat([]byte("0"), 64))
	meta := arrow.NewMetadata(
		[]string{keyFormat, keyFormatVersion, keyKind, keyVersion, keyJob, keySHA},
		[]string{formatName, strconv.Itoa(version), f.Kind, f.Version, f.Job, placeholder})
	fields := slices.DeleteFunc(slices.Clone(schemaFields), func(fd arrow.Field) bool { return fd.Name == drop })
	schema := arrow.NewSchema(fields, &meta)
	rec := buildRecord(schema, rows, drop)
	defer rec.Release()
	var buf bytes.Buffer
	size := 1 << 16
	for _, r := range rows {
		size += r.size() + 64
	}
	buf.Grow(size)
	w, err := ipc.NewFileWriter(&buf, ipc.WithSchema(schema))
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if err := w.Write(rec); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	b := buf.Bytes()
	sum := sha256.Sum256(b)
	digest := hex.EncodeToString(sum[:])
	copies := 0
	for off := 0; ; copies++ {
		i := bytes.Index(b[off:], []byte(placeholder))
		if i < 0 {
			break
		}
		copy(b[off+i+len(digestPrefix):], digest)
		off += i + len(placeholder)
	}
	if copies == 0 {
		return nil, errors.New("checkpoint: checksum placeholder not found in the encoded file")
	}
	f.SHA256, f.Bytes, f.FormatVersion = digest, len(b), FormatVersion
	return b, nil
}

// buildRecord makes the record batch of a file's rows. Its buffers are
// built at their exact sizes: arrays from builders carry up to 64 bytes of
// allocation padding each, which the IPC writer would copy into the file.
func buildRecord(schema *arrow.Schema, rows []*stored, drop string) arrow.RecordBatch {
	str := func(f func(*stored) string) arrow.Array {
		var b [][]byte
		for _, s := range rows {
			b = append(b, []byte(f(s)))
		}
		return varBinary(arrow.BinaryTypes.String, b)
	}
	bin := func(f func(*stored) []byte) arrow.Array {
		var b [][]byte
		for _, s := range rows {
			b = append(b, f(s))
		}
		return varBinary(arrow.BinaryTypes.Binary, b)
	}
	f32s := func(f func(*stored) []float32) arrow.Array {
		var b [][]byte
		for _, s := range rows {
			b = append(b, arrow.Float32Traits.CastToBytes(f(s)))
		}
		return list(arrow.PrimitiveTypes.Float32, b, 4)
	}
	var shapes, zeros [][]byte
	count, bits, qmin := make([]int64, len(rows)), make([]int8, len(rows)), make([]int32, len(rows))
	for i, s := range rows {
		shapes = append(shapes, arrow.Int64Traits.CastToBytes(s.shape))
		zeros = append(zeros, arrow.Int32Traits.CastToBytes(s.zero))
		count[i], bits[i], qmin[i] = s.count, s.bits, s.qmin
	}
	cols := []arrow.Array{
		str(func(s *stored) string { return s.name }),
		str(func(s *stored) string { return s.role }),
		list(arrow.PrimitiveTypes.Int64, shapes, 8),
		str(func(s *stored) string { return s.encoding }),
		str(func(s *stored) string { return s.indexFormat }),
		str(func(s *stored) string { return s.valueFormat }),
		primitive(arrow.PrimitiveTypes.Int64, arrow.Int64Traits.CastToBytes(count), len(rows)),
		primitive(arrow.PrimitiveTypes.Int8, arrow.Int8Traits.CastToBytes(bits), len(rows)),
		primitive(arrow.PrimitiveTypes.Int32, arrow.Int32Traits.CastToBytes(qmin), len(rows)),
		bin(func(s *stored) []byte { return s.index }),
		f32s(func(s *stored) []float32 { return s.values }),
		bin(func(s *stored) []byte { return s.codes }),
		f32s(func(s *stored) []float32 { return s.scale }),
		list(arrow.PrimitiveTypes.Int32, zeros, 4),
	}
	if k := slices.IndexFunc(schemaFields, func(fd arrow.Field) bool { return fd.Name == drop }); k >= 0 {
		cols[k].Release()
		cols = slices.Delete(cols, k, k+1)
	}
	rec := array.NewRecordBatch(schema, cols, int64(len(rows)))
	for _, c := range cols {
		c.Release()
	}
	return rec
}

// primitive makes a fixed-width array over exactly the given bytes.
func primitive(t arrow.DataType, b []byte, n int) arrow.Array {
	d := array.NewData(t, n, []*memory.Buffer{nil, memory.NewBufferBytes(b)}, nil, 0, 0)
	defer d.Release()
	return array.MakeFromData(d)
}

// offsets concatenates byte strings and returns their int32 offsets.
func offsets(items [][]byte, width int) (offs []int32, data []byte) {
	offs = make([]int32, 1, len(items)+1)
	n := 0
	for _, it := range items {
		n += len(it)
	}
	data = make([]byte, 0, n)
	for _, it := range items {
		data = append(data, it...)
		offs = append(offs, int32(len(data)/width))
	}
	return offs, data
}

// varBinary makes a binary or string array of the items.
func varBinary(t arrow.DataType, items [][]byte) arrow.Array {
	offs, data := offsets(items, 1)
	d := array.NewData(t, len(items), []*memory.Buffer{nil, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(offs)),
		memory.NewBufferBytes(data)}, nil, 0, 0)
	defer d.Release()
	return array.MakeFromData(d)
}

// list makes a list array whose elements (of byte width width) are the
// items' bytes.
func list(elem arrow.DataType, items [][]byte, width int) arrow.Array {
	offs, data := offsets(items, width)
	child := array.NewData(elem, len(data)/width, []*memory.Buffer{nil, memory.NewBufferBytes(data)}, nil, 0, 0)
	defer child.Release()
	d := array.NewData(arrow.ListOf(elem), len(items), []*memory.Buffer{nil, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(offs))},
		[]arrow.ArrayData{child}, 0, 0)
	defer d.Release()
	return array.MakeFromData(d)
}

// Write encodes a file and writes it atomically: a temporary file in the
// same directory, synced, then renamed over path, and the directory
// synced — a crash leaves the old file or the new one, never a torn one.
func Write(path string, f *File) error {
	b, err := Encode(f)
	if err != nil {
		return fmt.Errorf("%w (writing %s)", err, path)
	}
	return WriteAtomic(path, b)
}

// WriteAtomic writes bytes to path through a synced temporary file and a
// rename.
func WriteAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+tempMark+"*")
	if err != nil {
		return fmt.Errorf("checkpoint: write %s: %w", path, err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("checkpoint: write %s: %w", path, err)
	}
	if _, err := tmp.Write(b); err != nil {
		return fmt.Errorf("checkpoint: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("checkpoint: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("checkpoint: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("checkpoint: write %s: %w", path, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Read reads and verifies a file: its checksum is checked over the raw
// bytes before anything is decoded, and every error names the file.
func Read(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	f, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %s: %w", path, err)
	}
	return f, nil
}

// Decode verifies and decodes an encoded file.
func Decode(b []byte) (*File, error) {
	digest, err := Verify(b)
	if err != nil {
		return nil, err
	}
	f, err := decodeArrow(b)
	if err != nil {
		return nil, err
	}
	f.SHA256, f.Bytes = digest, len(b)
	return f, nil
}

var arrowMagic = []byte("ARROW1")

// Verify checks a file's magic and SHA-256 without decoding it, and
// returns the digest.
func Verify(b []byte) (string, error) {
	if len(b) < 12 || !bytes.Equal(b[:6], arrowMagic) || !bytes.Equal(b[len(b)-6:], arrowMagic) {
		return "", errors.New("not an Arrow IPC file (wrong magic or truncated)")
	}
	pre := []byte(digestPrefix)
	var digest []byte
	zeros := bytes.Repeat([]byte("0"), 64)
	h := sha256.New()
	copies, last := 0, 0
	for off := 0; ; {
		i := bytes.Index(b[off:], pre)
		if i < 0 {
			break
		}
		at := off + i + len(pre)
		if at+64 > len(b) {
			break
		}
		d := b[at : at+64]
		if digest == nil {
			digest = slices.Clone(d)
		} else if !bytes.Equal(d, digest) {
			return "", errors.New("checksum mismatch: the file has been altered (its two checksum copies differ)")
		}
		// Hash with the copy read as zeros, without copying the file.
		h.Write(b[last:at])
		h.Write(zeros)
		last = at + 64
		copies++
		off = at + 64
	}
	if copies == 0 {
		return "", errors.New("no lathe checksum: not a lathe file, or truncated")
	}
	h.Write(b[last:])
	if hex.EncodeToString(h.Sum(nil)) != string(digest) {
		return "", errors.New("checksum mismatch: the file is truncated or altered")
	}
	return string(digest), nil
}

// decodeArrow parses verified bytes. A recover() boundary turns a panic in
// the Arrow reader into an error.
func decodeArrow(b []byte) (f *File, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, fmt.Errorf("malformed Arrow data: %v", r)
		}
	}()
	rd, err := ipc.NewFileReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("reading the Arrow data: %w", err)
	}
	defer rd.Close()
	meta := rd.Schema().Metadata()
	get := func(k string) string {
		if i := meta.FindKey(k); i >= 0 {
			return meta.Values()[i]
		}
		return ""
	}
	if get(keyFormat) != formatName {
		return nil, fmt.Errorf("not a lathe file (metadata %s = %q)", keyFormat, get(keyFormat))
	}
	v, err := strconv.Atoi(get(keyFormatVersion))
	if err != nil {
		return nil, fmt.Errorf("bad format version %q", get(keyFormatVersion))
	}
	if v > FormatVersion || v < 1 {
		return nil, fmt.Errorf("format version %d; this lathe reads versions 1 to %d (upgrade lathe)", v, FormatVersion)
	}
	f = &File{Kind: get(keyKind), Job: get(keyJob), Version: get(keyVersion), FormatVersion: v}
	if f.Kind != KindModel && f.Kind != KindTraining && f.Kind != KindLogits {
		return nil, fmt.Errorf("unknown file kind %q", f.Kind)
	}
	if rd.NumRecords() != 1 {
		return nil, fmt.Errorf("%d record batches, want 1", rd.NumRecords())
	}
	rec, err := rd.RecordBatch(0)
	if err != nil {
		return nil, fmt.Errorf("reading the Arrow data: %w", err)
	}
	rows, err := readRows(rec)
	if err != nil {
		return nil, err
	}
	// An element costs at least a bit of index or value, except in sparse
	// tails: cap decoded tensors at 4096 elements per file byte.
	limit := max(1<<16, 4096*len(b))
	for _, s := range rows {
		if s.role == RoleMeta {
			if s.name != StateRow || s.encoding != EncJSON || f.State != nil {
				return nil, fmt.Errorf("unexpected meta row %q (%s)", s.name, s.encoding)
			}
			f.State = s.codes
			continue
		}
		t, err := decode(s, limit)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", s.name, err)
		}
		f.Tensors = append(f.Tensors, t)
	}
	if f.State == nil {
		return nil, errors.New("no state row")
	}
	return f, nil
}

// readRows reads the record's columns by name, refusing missing or
// mistyped ones.
func readRows(rec arrow.RecordBatch) ([]*stored, error) {
	col := func(name string) (arrow.Array, error) {
		idx := rec.Schema().FieldIndices(name)
		if len(idx) != 1 {
			return nil, fmt.Errorf("missing column %q", name)
		}
		want := schemaFields[slices.IndexFunc(schemaFields, func(f arrow.Field) bool { return f.Name == name })].Type
		c := rec.Column(idx[0])
		if !arrow.TypeEqual(c.DataType(), want) {
			return nil, fmt.Errorf("column %q has type %s, want %s", name, c.DataType(), want)
		}
		return c, nil
	}
	cols := map[string]arrow.Array{}
	for _, fd := range schemaFields {
		c, err := col(fd.Name)
		if err != nil {
			return nil, err
		}
		cols[fd.Name] = c
	}
	str := func(name string, i int) string { return cols[name].(*array.String).Value(i) }
	f32list := func(name string, i int) []float32 {
		l := cols[name].(*array.List)
		lo, hi := l.ValueOffsets(i)
		return slices.Clone(l.ListValues().(*array.Float32).Float32Values()[lo:hi])
	}
	n := int(rec.NumRows())
	rows := make([]*stored, n)
	for i := range n {
		s := &stored{
			name: cols["name"].(*array.String).Value(i), role: str("role", i), encoding: str("encoding", i),
			indexFormat: str("index_format", i), valueFormat: str("value_format", i),
			count: cols["count"].(*array.Int64).Value(i), bits: cols["bits"].(*array.Int8).Value(i),
			qmin:  cols["qmin"].(*array.Int32).Value(i),
			index: cols["index"].(*array.Binary).Value(i), codes: cols["codes"].(*array.Binary).Value(i),
			values: f32list("values", i), scale: f32list("scale", i),
		}
		sl := cols["shape"].(*array.List)
		lo, hi := sl.ValueOffsets(i)
		s.shape = slices.Clone(sl.ListValues().(*array.Int64).Int64Values()[lo:hi])
		zl := cols["zero_point"].(*array.List)
		lo, hi = zl.ValueOffsets(i)
		s.zero = slices.Clone(zl.ListValues().(*array.Int32).Int32Values()[lo:hi])
		s.index, s.codes = slices.Clone(s.index), slices.Clone(s.codes)
		rows[i] = s
	}
	return rows, nil
}

// WeightsDigest is a SHA-256 over a file's parameters — names, shapes and
// the bits of every value, in name order — equal for two files exactly
// when their weights are, whatever the encodings.
func WeightsDigest(ts []*Tensor) string {
	var ps []*Tensor
	for _, t := range ts {
		if t.Role == RoleParam {
			ps = append(ps, t)
		}
	}
	slices.SortFunc(ps, func(a, b *Tensor) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	h := sha256.New()
	var b []byte
	for _, t := range ps {
		b = binary.AppendUvarint(b[:0], uint64(len(t.Name)))
		b = append(b, t.Name...)
		b = binary.AppendUvarint(b, uint64(len(t.Shape)))
		for _, d := range t.Shape {
			b = binary.AppendUvarint(b, uint64(d))
		}
		for _, v := range t.Data {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// tempMark marks the temporary files of WriteAtomic: "." + the target's
// name + tempMark + a random suffix.
const tempMark = ".tmp-"

// IsTemp says whether name is a temporary file WriteAtomic (or a writer
// following its naming) leaves behind when its process is killed.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, tempMark)
}
