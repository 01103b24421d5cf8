package data

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// table is a record of a features column (fixed-size lists of uint8 of
// 2 channels × 1×2 pixels, channels first) and a label column.
func table(t *testing.T, pixels [][]byte, labels []int64, labelType arrow.DataType) arrow.RecordBatch {
	t.Helper()
	md := arrow.NewMetadata([]string{"shape"}, []string{"2,1,2"})
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "features", Type: arrow.FixedSizeListOf(4, arrow.PrimitiveTypes.Uint8), Metadata: md},
		{Name: "label", Type: labelType},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	lb := b.Field(0).(*array.FixedSizeListBuilder)
	vb := lb.ValueBuilder().(*array.Uint8Builder)
	for _, p := range pixels {
		lb.Append(true)
		vb.AppendValues(p, nil)
	}
	switch lt := b.Field(1).(type) {
	case *array.Int64Builder:
		lt.AppendValues(labels, nil)
	case *array.Float64Builder:
		for _, l := range labels {
			lt.Append(float64(l) + 0.5)
		}
	}
	return b.NewRecordBatch()
}

func writeArrow(t *testing.T, path string, rec arrow.RecordBatch) {
	t.Helper()
	var buf bytes.Buffer
	w, err := ipc.NewFileWriter(&buf, ipc.WithSchema(rec.Schema()))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeParquet(t *testing.T, path string, rec arrow.RecordBatch) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tbl := array.NewTableFromRecords(rec.Schema(), []arrow.RecordBatch{rec})
	if err := pqarrow.WriteTable(tbl, f, 1024, nil, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema())); err != nil {
		t.Fatal(err)
	}
}

// TestArrowAndParquet reads a features column of uint8 images (its shape
// from the field's metadata, channels first) and a label column, from an
// Arrow IPC file and from Parquet, the same.
func TestArrowAndParquet(t *testing.T) {
	train := table(t, [][]byte{{1, 2, 3, 4}, {5, 6, 7, 8}}, []int64{0, 2}, arrow.PrimitiveTypes.Int64)
	test := table(t, [][]byte{{9, 10, 11, 12}}, []int64{1}, arrow.PrimitiveTypes.Int64)
	for _, format := range []string{"arrow", "parquet"} {
		dir := t.TempDir()
		write := writeArrow
		if format == "parquet" {
			write = writeParquet
		}
		write(t, filepath.Join(dir, "train."+format), train)
		write(t, filepath.Join(dir, "test."+format), test)
		tr, te, err := Load(format, dir)
		if err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		if tr.Len() != 2 || tr.Channels != 2 || tr.Rows != 1 || tr.Cols != 2 || tr.Classes != 3 || string(te.Images) != string([]byte{9, 11, 10, 12}) || te.Labels[0] != 1 {
			t.Errorf("%s: train %d samples %d×%d×%d, %d classes; test %v %v", format, tr.Len(), tr.Channels, tr.Rows, tr.Cols, tr.Classes, te.Images, te.Labels)
		}
	}
	// A float label column is refused naming the row.
	dir := t.TempDir()
	writeArrow(t, filepath.Join(dir, "train.arrow"), table(t, [][]byte{{1, 2, 3, 4}}, []int64{0}, arrow.PrimitiveTypes.Float64))
	writeArrow(t, filepath.Join(dir, "test.arrow"), test)
	if _, _, err := Load("arrow", dir); err == nil || !strings.Contains(err.Error(), "train.arrow: row 0: label 0.5 is not a class number") {
		t.Errorf("float labels: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "train.arrow"), []byte("not arrow"), 0o644)
	if _, _, err := Load("arrow", dir); err == nil || !strings.Contains(err.Error(), "train.arrow: not an Arrow IPC file or stream") {
		t.Errorf("garbage: %v", err)
	}
}

// tensorType is Arrow's fixed-shape tensor extension as another library
// writes it (pyarrow's FixedShapeTensorType): fixed-size lists with the
// extension's name and JSON metadata. It is not registered, so a file
// read back holds what any reader that does not know it sees.
type tensorType struct {
	arrow.ExtensionBase
	meta string
}

func (t *tensorType) ExtensionName() string { return "arrow.fixed_shape_tensor" }
func (t *tensorType) Serialize() string     { return t.meta }
func (t *tensorType) Deserialize(storage arrow.DataType, meta string) (arrow.ExtensionType, error) {
	return &tensorType{ExtensionBase: arrow.ExtensionBase{Storage: storage}, meta: meta}, nil
}
func (t *tensorType) ExtensionEquals(o arrow.ExtensionType) bool { return o.Serialize() == t.meta }
func (t *tensorType) ArrayType() reflect.Type                    { return reflect.TypeOf(tensorArray{}) }

type tensorArray struct{ array.ExtensionArrayBase }

// TestTensorExtension reads a features column of Arrow's fixed-shape
// tensor type — channels last (dim_names H, W, C) and channels first —
// from Arrow IPC and Parquet: the same NHWC pixels either way; a
// permuted tensor is refused naming the column.
func TestTensorExtension(t *testing.T) {
	// Two samples of 1×2 pixels × 2 channels, NHWC: pixel p channel c = 10·p + c (+ 100 for the second).
	nhwc := [][]byte{{0, 1, 10, 11}, {100, 101, 110, 111}}
	nchw := [][]byte{{0, 10, 1, 11}, {100, 110, 101, 111}}
	// In IPC the extension type itself; in Parquet (whose Go writer takes no
	// extension of lists) the field metadata it stands for.
	rec := func(meta string, pixels [][]byte, asType bool) arrow.RecordBatch {
		storage := arrow.FixedSizeListOf(4, arrow.PrimitiveTypes.Uint8)
		ext := &tensorType{ExtensionBase: arrow.ExtensionBase{Storage: storage}, meta: meta}
		field := arrow.Field{Name: "features", Type: ext}
		if !asType {
			field = arrow.Field{Name: "features", Type: storage, Metadata: arrow.NewMetadata(
				[]string{"ARROW:extension:name", "ARROW:extension:metadata"}, []string{ext.ExtensionName(), meta})}
		}
		schema := arrow.NewSchema([]arrow.Field{field, {Name: "label", Type: arrow.PrimitiveTypes.Int64}}, nil)
		lb := array.NewFixedSizeListBuilder(memory.DefaultAllocator, 4, arrow.PrimitiveTypes.Uint8)
		defer lb.Release()
		vb := lb.ValueBuilder().(*array.Uint8Builder)
		for _, p := range pixels {
			lb.Append(true)
			vb.AppendValues(p, nil)
		}
		st := lb.NewArray()
		defer st.Release()
		feats := st
		if asType {
			feats = array.NewExtensionArrayWithStorage(ext, st)
		}
		lab := array.NewInt64Builder(memory.DefaultAllocator)
		lab.AppendValues([]int64{0, 1}, nil)
		return array.NewRecordBatch(schema, []arrow.Array{feats, lab.NewArray()}, 2)
	}
	for _, c := range []struct {
		meta   string
		pixels [][]byte
	}{
		{`{"shape":[1,2,2],"dim_names":["H","W","C"]}`, nhwc},
		{`{"shape":[2,1,2]}`, nchw},
	} {
		for _, format := range []string{"arrow", "parquet"} {
			dir := t.TempDir()
			write := writeArrow
			if format == "parquet" {
				write = writeParquet
			}
			r := rec(c.meta, c.pixels, format == "arrow")
			write(t, filepath.Join(dir, "train."+format), r)
			write(t, filepath.Join(dir, "test."+format), r)
			tr, _, err := Load(format, dir)
			if err != nil {
				t.Fatalf("%s %s: %v", format, c.meta, err)
			}
			want := map[byte][]byte{0: nhwc[0], 1: nhwc[1]}
			for i := range tr.Len() {
				if got := tr.Images[i*4 : (i+1)*4]; tr.Channels != 2 || tr.Rows != 1 || tr.Cols != 2 || string(got) != string(want[tr.Labels[i]]) {
					t.Errorf("%s %s: %d×%d×%d, sample %d pixels %v, want %v", format, c.meta, tr.Channels, tr.Rows, tr.Cols, i, got, want[tr.Labels[i]])
				}
			}
		}
	}
	dir := t.TempDir()
	r := rec(`{"shape":[2,1,2],"permutation":[1,0,2]}`, nchw, true)
	writeArrow(t, filepath.Join(dir, "train.arrow"), r)
	writeArrow(t, filepath.Join(dir, "test.arrow"), r)
	if _, _, err := Load("arrow", dir); err == nil || !strings.Contains(err.Error(), "train.arrow: column features (arrow.fixed_shape_tensor): permutation [1 0 2]") {
		t.Errorf("a permuted tensor: %v", err)
	}
}
