package data

import (
	"bytes"
	"os"
	"path/filepath"
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
