package report

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
)

// Table is a CSV file read by columns: every cell a number, NaN where a
// cell is empty or not a number (a name column keeps its text in Text).
type Table struct {
	Header []string
	Cols   map[string][]float64
	Text   map[string][]string
	Rows   int
	// Partial says the file ended mid-row (a run killed while writing
	// it); the rows before it are kept.
	Partial bool
}

// Col returns a column, nil when the table lacks it.
func (t *Table) Col(name string) []float64 {
	if t == nil {
		return nil
	}
	return t.Cols[name]
}

// ReadTable reads a CSV file with a header row. A missing file is
// (nil, nil): a run writes its files as it goes.
func ReadTable(path string) (*Table, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err == io.EOF {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t := &Table{Header: header, Cols: map[string][]float64{}, Text: map[string][]string{}}
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil || len(rec) != len(header) {
			// Only the last row may be cut short; anything after it is not
			// trusted either.
			t.Partial = true
			break
		}
		for i, h := range header {
			v, err := strconv.ParseFloat(rec[i], 64)
			if err != nil {
				v = math.NaN()
			}
			t.Cols[h] = append(t.Cols[h], v)
			t.Text[h] = append(t.Text[h], rec[i])
		}
		t.Rows++
	}
	return t, nil
}

// readJSON decodes path into v and says whether the file was there.
func readJSON(path string, v any) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return true, nil
}

// teacherDirs are a run's teachers' run directories (one, or one per
// member of an ensemble), those that exist.
func teacherDirs(dir string) []string {
	var out []string
	if fi, err := os.Stat(filepath.Join(dir, "teacher")); err == nil && fi.IsDir() {
		out = append(out, filepath.Join(dir, "teacher"))
	}
	more, _ := filepath.Glob(filepath.Join(dir, "teacher-[0-9]*"))
	return append(out, more...)
}
