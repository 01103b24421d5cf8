package checkpoint

import "strings"

// TensorInfo is one tensor of an Inspection.
type TensorInfo struct {
	Name        string  `json:"name"`
	Role        string  `json:"role"`
	Shape       []int   `json:"shape"`
	Encoding    string  `json:"encoding"`
	IndexFormat string  `json:"index_format"`
	ValueFormat string  `json:"value_format"`
	Sparsity    float64 `json:"sparsity"`
	Bits        int     `json:"bits"`
	Bytes       int     `json:"bytes"` // stored bytes
}

// Inspection describes a file tensor by tensor: how each is encoded and
// what it costs on disk (lathe inspect prints it; lathe report draws it).
type Inspection struct {
	File          string       `json:"file"`
	Kind          string       `json:"kind"`
	Job           string       `json:"job"`
	FormatVersion int          `json:"format_version"`
	LatheVersion  string       `json:"lathe_version"`
	Tensors       []TensorInfo `json:"tensors"`
	FileBytes     int          `json:"file_bytes"`
	DenseBytes    int          `json:"dense_bytes"` // fp32 size of the parameters
	Ratio         float64      `json:"ratio"`       // DenseBytes / FileBytes
	SHA256        string       `json:"sha256"`
	WeightsSHA256 string       `json:"weights_sha256"`
}

// Inspect describes f, read from path.
func Inspect(f *File, path string) Inspection {
	in := Inspection{File: path, Kind: f.Kind, Job: f.Job, FormatVersion: f.FormatVersion, LatheVersion: f.Version,
		FileBytes: f.Bytes, SHA256: f.SHA256, WeightsSHA256: WeightsDigest(f.Tensors)}
	for _, t := range f.Tensors {
		ti := TensorInfo{Name: t.Name, Role: t.Role, Shape: t.Shape, Encoding: t.Encoding, IndexFormat: t.IndexFormat,
			ValueFormat: t.ValueFormat, Bytes: t.StoredBytes, Bits: 32}
		zeros, n := 0, len(t.Data)
		if t.Role == RoleMask {
			ti.Bits, n = 1, len(t.Mask)
			for _, b := range t.Mask {
				if b == 0 {
					zeros++
				}
			}
		} else {
			for _, v := range t.Data {
				if v == 0 {
					zeros++
				}
			}
		}
		if n > 0 {
			ti.Sparsity = float64(zeros) / float64(n)
		}
		switch {
		case t.Quant != nil:
			ti.Bits = t.Quant.Bits
		case strings.Contains(t.Encoding, EncCodebook):
			ti.Bits = t.Bits
		}
		if t.Role == RoleParam {
			in.DenseBytes += 4 * len(t.Data)
		}
		in.Tensors = append(in.Tensors, ti)
	}
	if in.FileBytes > 0 {
		in.Ratio = float64(in.DenseBytes) / float64(in.FileBytes)
	}
	return in
}
