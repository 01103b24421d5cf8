package data

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// Arrow IPC ("arrow": train.arrow, test.arrow — the file or the stream
// format) and Parquet ("parquet": train.parquet, test.parquet) tables: a
// label column ("label", integer class numbers) and either a feature column
// of fixed-size lists ("features": uint8 pixels, scaled by 1/255, or
// float32/float64 values as they are; its field metadata "shape" = "H,W"
// or "C,H,W" — channels first — makes them images, as does Arrow's
// fixed-shape tensor extension type) or, without one, every other numeric
// column as one feature.

// loadTable reads one split's table, SPLIT.arrow or SPLIT.parquet.
func loadTable(format, dir, split string) (*Set, error) {
	path := filepath.Join(dir, split+"."+format)
	recs, schema, err := readTable(format, path)
	if err != nil {
		return nil, fmt.Errorf("data: %s: %w", path, err)
	}
	s, err := tableSet(schema, recs)
	if err != nil {
		return nil, fmt.Errorf("data: %s: %w", path, err)
	}
	return s, nil
}

// readTable reads a file's record batches.
func readTable(format, path string) ([]arrow.RecordBatch, *arrow.Schema, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var recs []arrow.RecordBatch
	if format == "parquet" {
		tbl, err := pqarrow.ReadTable(context.Background(), bytes.NewReader(b), nil, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
		if err != nil {
			return nil, nil, fmt.Errorf("not a readable Parquet file: %w", err)
		}
		tr := array.NewTableReader(tbl, 0)
		for tr.Next() {
			rec := tr.RecordBatch()
			rec.Retain()
			recs = append(recs, rec)
		}
		return recs, tbl.Schema(), nil
	}
	if fr, err := ipc.NewFileReader(bytes.NewReader(b)); err == nil {
		for i := 0; i < fr.NumRecords(); i++ {
			rec, err := fr.RecordBatch(i)
			if err != nil {
				return nil, nil, err
			}
			rec.Retain()
			recs = append(recs, rec)
		}
		return recs, fr.Schema(), nil
	}
	sr, err := ipc.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, nil, fmt.Errorf("not an Arrow IPC file or stream: %w", err)
	}
	for sr.Next() {
		rec := sr.RecordBatch()
		rec.Retain()
		recs = append(recs, rec)
	}
	if err := sr.Err(); err != nil {
		return nil, nil, err
	}
	return recs, sr.Schema(), nil
}

// tableSet makes a set of a table's label and feature columns.
func tableSet(schema *arrow.Schema, recs []arrow.RecordBatch) (*Set, error) {
	label := -1
	feat := -1
	for i, f := range schema.Fields() {
		switch strings.ToLower(f.Name) {
		case "label":
			label = i
		case "features":
			feat = i
		}
	}
	if label < 0 {
		return nil, fmt.Errorf("no column named label (columns: %s)", names(schema))
	}
	s := &Set{Rows: 1}
	var cols []int // numeric feature columns, when there is no features column
	nhwc := false  // a tensor column's pixels are already NHWC
	if feat >= 0 {
		f := schema.Field(feat)
		typ, tensor, isTensor := tensorColumn(f)
		l, ok := typ.(*arrow.FixedSizeListType)
		if !ok {
			return nil, fmt.Errorf("column features is %s; want fixed-size lists", f.Type)
		}
		s.Cols = int(l.Len())
		if sh, ok := f.Metadata.GetValue("shape"); ok && !isTensor {
			dims, err := parseShape(sh, s.Cols)
			if err != nil {
				return nil, fmt.Errorf("column features: %w", err)
			}
			s.Channels, s.Rows, s.Cols = dims[0], dims[1], dims[2]
		}
		if isTensor {
			dims, last, err := tensorShape(tensor, s.Cols)
			if err != nil {
				return nil, fmt.Errorf("column features (arrow.fixed_shape_tensor): %w", err)
			}
			s.Channels, s.Rows, s.Cols, nhwc = dims[0], dims[1], dims[2], last
		}
		switch l.Elem().ID() {
		case arrow.UINT8:
		case arrow.FLOAT32, arrow.FLOAT64:
			s.Floats = []float32{}
		default:
			return nil, fmt.Errorf("column features holds %s; want uint8, float32 or float64", l.Elem())
		}
	} else {
		for i, f := range schema.Fields() {
			if i != label && (arrow.IsInteger(f.Type.ID()) || arrow.IsFloating(f.Type.ID())) {
				cols = append(cols, i)
			}
		}
		if len(cols) == 0 {
			return nil, fmt.Errorf("no features column and no numeric column besides label (columns: %s)", names(schema))
		}
		s.Cols, s.Floats = len(cols), []float32{}
	}
	row := 0
	for _, rec := range recs {
		n := int(rec.NumRows())
		if err := s.addLabels(rec.Column(label), row); err != nil {
			return nil, err
		}
		if feat >= 0 {
			if err := s.addList(rec.Column(feat), row); err != nil {
				return nil, err
			}
		} else {
			start := len(s.Floats)
			s.Floats = append(s.Floats, make([]float32, n*len(cols))...)
			for j, c := range cols {
				for r := range n {
					v, err := number(rec.Column(c), r)
					if err != nil {
						return nil, fmt.Errorf("row %d, column %s: %w", row+r, schema.Field(c).Name, err)
					}
					s.Floats[start+r*len(cols)+j] = v
				}
			}
		}
		row += n
	}
	if s.Len() == 0 {
		return nil, fmt.Errorf("no rows")
	}
	if s.Channels > 1 && !nhwc {
		if s.Floats != nil {
			s.Floats = channelsLast(s.Floats, s.Len(), s.Channels, s.Features())
		} else {
			s.Images = channelsLast(s.Images, s.Len(), s.Channels, s.Features())
		}
	}
	return s, nil
}

func names(schema *arrow.Schema) string {
	var out []string
	for _, f := range schema.Fields() {
		out = append(out, f.Name)
	}
	return strings.Join(out, ", ")
}

// tensorColumn recognizes Arrow's fixed-shape tensor extension
// (arrow.fixed_shape_tensor) on a column — as a registered extension type
// or, as a reader that does not know it leaves it, the storage type with
// the extension's name and metadata on the field — and returns the
// storage type and the extension's metadata.
func tensorColumn(f arrow.Field) (storage arrow.DataType, meta string, ok bool) {
	const name = "arrow.fixed_shape_tensor"
	if ext, isExt := f.Type.(arrow.ExtensionType); isExt {
		return ext.StorageType(), ext.Serialize(), ext.ExtensionName() == name
	}
	if n, _ := f.Metadata.GetValue("ARROW:extension:name"); n == name {
		meta, _ = f.Metadata.GetValue("ARROW:extension:metadata")
		return f.Type, meta, true
	}
	return f.Type, "", false
}

// tensorShape reads a fixed-shape tensor's metadata ({"shape": [...],
// "dim_names": [...], "permutation": [...]}) for tensors of n values: [H,
// W] (grey), [C, H, W] (channels first, PyTorch's order) or, where the
// last dimension is named C, [H, W, C] (last says so). A permutation
// other than the identity is refused.
func tensorShape(meta string, n int) (dims [3]int, last bool, err error) {
	var m struct {
		Shape       []int    `json:"shape"`
		DimNames    []string `json:"dim_names"`
		Permutation []int    `json:"permutation"`
	}
	if err := json.Unmarshal([]byte(meta), &m); err != nil {
		return dims, false, fmt.Errorf("metadata %q: %w", meta, err)
	}
	for i, p := range m.Permutation {
		if p != i {
			return dims, false, fmt.Errorf("permutation %v: lathe reads tensors stored in their logical order", m.Permutation)
		}
	}
	size := 1
	for _, d := range m.Shape {
		if d <= 0 || size > n/d { // (the product stays at most n: it cannot wrap around)
			return dims, false, fmt.Errorf("shape %v for lists of %d values", m.Shape, n)
		}
		size *= d
	}
	switch {
	case size != n || len(m.Shape) < 2 || len(m.Shape) > 3:
		return dims, false, fmt.Errorf("shape %v for lists of %d values: want [H, W], [C, H, W] or [H, W, C]", m.Shape, n)
	case len(m.Shape) == 2:
		return [3]int{1, m.Shape[0], m.Shape[1]}, false, nil
	case len(m.DimNames) == 3 && strings.EqualFold(m.DimNames[2], "C"):
		return [3]int{m.Shape[2], m.Shape[0], m.Shape[1]}, true, nil
	}
	return [3]int{m.Shape[0], m.Shape[1], m.Shape[2]}, false, nil
}

// parseShape reads "H,W" or "C,H,W" holding n values.
func parseShape(s string, n int) ([3]int, error) {
	var dims []int
	for _, p := range strings.Split(strings.Trim(s, "[]() "), ",") {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v <= 0 {
			return [3]int{}, fmt.Errorf("shape %q: want H,W or C,H,W", s)
		}
		dims = append(dims, v)
	}
	if len(dims) == 2 {
		dims = append([]int{1}, dims...)
	}
	if len(dims) != 3 || dims[0]*dims[1]*dims[2] != n {
		return [3]int{}, fmt.Errorf("shape %q for lists of %d values", s, n)
	}
	return [3]int{dims[0], dims[1], dims[2]}, nil
}

// addLabels appends a label column's class numbers.
func (s *Set) addLabels(col arrow.Array, row int) error {
	for r := 0; r < col.Len(); r++ {
		if col.IsNull(r) {
			return fmt.Errorf("row %d: label is null", row+r)
		}
		v, err := number(col, r)
		if err != nil || v != float32(int(v)) || v < 0 || v > 255 || !arrow.IsInteger(col.DataType().ID()) {
			return fmt.Errorf("row %d: label %s is not a class number (an integer 0 to 255)", row+r, col.ValueStr(r))
		}
		s.Labels = append(s.Labels, byte(v))
		s.Classes = max(s.Classes, int(v)+1)
	}
	return nil
}

// addList appends a fixed-size list column's values.
func (s *Set) addList(col arrow.Array, row int) error {
	if e, ok := col.(array.ExtensionArray); ok { // a registered tensor type
		col = e.Storage()
	}
	l := col.(*array.FixedSizeList)
	vals := l.ListValues()
	w := s.Features()
	for r := 0; r < l.Len(); r++ {
		if l.IsNull(r) {
			return fmt.Errorf("row %d: features is null", row+r)
		}
		lo := (l.Offset() + r) * w
		switch v := vals.(type) {
		case *array.Uint8:
			s.Images = append(s.Images, v.Uint8Values()[lo:lo+w]...)
		case *array.Float32:
			s.Floats = append(s.Floats, v.Float32Values()[lo:lo+w]...)
		case *array.Float64:
			for _, x := range v.Float64Values()[lo : lo+w] {
				s.Floats = append(s.Floats, float32(x))
			}
		}
	}
	return nil
}

// number is a numeric column's value at r.
func number(col arrow.Array, r int) (float32, error) {
	if col.IsNull(r) {
		return 0, fmt.Errorf("a null value")
	}
	switch c := col.(type) {
	case *array.Float32:
		return c.Value(r), nil
	case *array.Float64:
		return float32(c.Value(r)), nil
	case *array.Int8:
		return float32(c.Value(r)), nil
	case *array.Int16:
		return float32(c.Value(r)), nil
	case *array.Int32:
		return float32(c.Value(r)), nil
	case *array.Int64:
		return float32(c.Value(r)), nil
	case *array.Uint8:
		return float32(c.Value(r)), nil
	case *array.Uint16:
		return float32(c.Value(r)), nil
	case *array.Uint32:
		return float32(c.Value(r)), nil
	case *array.Uint64:
		return float32(c.Value(r)), nil
	}
	return 0, fmt.Errorf("a %s value, not a number", col.DataType())
}
