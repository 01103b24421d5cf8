package checkpoint

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// Tensor roles.
const (
	RoleParam = "param" // a model parameter (weight or bias)
	RoleMask  = "mask"  // a pruning mask: one byte per element, 0 or 1
	RoleOptim = "optim" // optimizer state
	RoleState = "state" // other training state (activation ranges, undo values)
	RoleMeta  = "meta"  // the file's state document (not a tensor)
)

// StateRow names the row that holds a file's state document: role meta,
// encoding json, the UTF-8 text in the codes column.
const StateRow = "lathe.state"

// Encodings, index formats and value formats as they appear in files.
const (
	EncDense          = "dense_f32"
	EncSparse         = "sparse"
	EncQuant          = "quant"
	EncCodebook       = "codebook"
	EncSparseQuant    = "sparse+quant"
	EncSparseCodebook = "sparse+codebook"
	EncMask           = "mask"
	EncJSON           = "json" // the state row

	IndexNone   = "none"
	IndexBitmap = "bitmap"
	IndexCSR    = "csr"
	IndexDelta  = "delta_huffman"

	ValueF32     = "f32"
	ValueF32Huff = "f32_huffman" // float32 values: top two bytes Huffman-coded, low two raw
	ValuePacked  = "packed"
	ValueHuffman = "huffman"
	ValueUTF8    = "utf8" // the state row's text
)

// Quant says that a tensor's values are quantized: element i (of channel
// c, the first dimension when Scale has one entry per channel) equals
// float32(Codes[i] − Zero[c]) · Scale[c] exactly. Files store the codes.
type Quant struct {
	Bits  int // 2 to 8
	QMin  int32
	Scale []float32
	Zero  []int32
	Codes []int32
}

// Tensor is one named tensor of a file.
type Tensor struct {
	Name  string
	Role  string
	Shape []int
	Data  []float32 // values (all roles but RoleMask)
	Mask  []byte    // RoleMask: one byte per element, 0 or 1
	// Quant, when set on a tensor written compactly, stores Data as integer
	// codes; Read fills it back for tensors stored so.
	Quant *Quant

	// How the tensor is stored, filled by Read and by Encode.
	Encoding    string
	IndexFormat string
	ValueFormat string
	Bits        int // bits per stored code: packed codes, or a codebook's index width; 0 for float values
	StoredBytes int // bytes of its index, values, codes and tables
}

// Size is the number of elements its shape holds.
func (t *Tensor) Size() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// stored is a tensor as its row of the file holds it.
type stored struct {
	name, role                         string
	shape                              []int64
	encoding, indexFormat, valueFormat string
	count                              int64 // stored values
	bits                               int8
	qmin                               int32 // quant: the code of symbol 0
	index                              []byte
	values                             []float32
	codes                              []byte
	scale                              []float32
	zero                               []int32
}

func (s *stored) size() int {
	return len(s.index) + 4*len(s.values) + len(s.codes) + 4*len(s.scale) + 4*len(s.zero)
}

// encode stores a tensor: densely (fast, for training checkpoints), or in
// the smallest exact encoding lathe has (compact, for model files).
func encode(t *Tensor, compact bool) (*stored, error) {
	n, err := checkShape(t.Shape, -1)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	s := &stored{name: t.Name, role: t.Role, indexFormat: IndexNone, valueFormat: ValueF32}
	for _, d := range t.Shape {
		s.shape = append(s.shape, int64(d))
	}
	if t.Role == RoleMask {
		if len(t.Mask) != n {
			return nil, fmt.Errorf("tensor %q: mask of %d bytes for shape %v", t.Name, len(t.Mask), t.Shape)
		}
		s.encoding, s.indexFormat, s.count = EncMask, IndexBitmap, int64(n)
		s.index = bitmap(n, func(i int) bool { return t.Mask[i] != 0 })
		return s, nil
	}
	if len(t.Data) != n {
		return nil, fmt.Errorf("tensor %q: %d values for shape %v", t.Name, len(t.Data), t.Shape)
	}
	if !compact || n == 0 {
		s.encoding, s.values, s.count = EncDense, t.Data, int64(n)
		return s, nil
	}
	if t.Quant != nil {
		return encodeQuant(t, s, n)
	}
	return encodeFloat(t, s, n)
}

// index candidates for the positions of a tensor's stored elements.
type indexChoice struct {
	format string
	bytes  []byte
}

func indexChoices(shape []int, n int, keep func(int) bool) []indexChoice {
	pos := make([]int, 0)
	for i := range n {
		if keep(i) {
			pos = append(pos, i)
		}
	}
	if len(pos) == n {
		return []indexChoice{{format: IndexNone}}
	}
	out := []indexChoice{
		{IndexBitmap, bitmap(n, keep)},
		{IndexDelta, deltaIndex(pos)},
	}
	if len(shape) >= 2 {
		out = append(out, indexChoice{IndexCSR, csrIndex(shape[0], n/shape[0], pos)})
	}
	return out
}

func bitmap(n int, keep func(int) bool) []byte {
	b := make([]byte, (n+7)/8)
	for i := range n {
		if keep(i) {
			b[i>>3] |= 1 << (i & 7)
		}
	}
	return b
}

// deltaIndex entropy-codes the gaps between kept positions: each gap (zeros
// skipped) is a symbol below 255, with 255 meaning "skip 255, no element
// yet" (Deep Compression's filler).
func deltaIndex(pos []int) []byte {
	return huffEncode(deltaSymbols(pos))
}

func deltaSymbols(pos []int) []uint16 {
	syms := make([]uint16, 0, len(pos))
	prev := -1
	for _, p := range pos {
		g := p - prev - 1
		for g >= 255 {
			syms = append(syms, 255)
			g -= 255
		}
		syms = append(syms, uint16(g))
		prev = p
	}
	return syms
}

// csrIndex: one byte of column width (2 or 4), the count of kept elements
// per row (uint32, little-endian), then their columns.
func csrIndex(rows, cols int, pos []int) []byte {
	w := 2
	if cols > 1<<16 {
		w = 4
	}
	b := []byte{byte(w)}
	counts := make([]uint32, rows)
	for _, p := range pos {
		counts[p/cols]++
	}
	for _, c := range counts {
		b = binary.LittleEndian.AppendUint32(b, c)
	}
	for _, p := range pos {
		if w == 2 {
			b = binary.LittleEndian.AppendUint16(b, uint16(p%cols))
		} else {
			b = binary.LittleEndian.AppendUint32(b, uint32(p%cols))
		}
	}
	return b
}

// symbolChoices: packed at width bits, or Huffman-coded.
func symbolChoices(syms []uint16, width int) []indexChoice {
	return []indexChoice{{ValuePacked, pack(syms, width)}, {ValueHuffman, huffEncode(syms)}}
}

func encodeQuant(t *Tensor, s *stored, n int) (*stored, error) {
	q := t.Quant
	if q.Bits < 2 || q.Bits > 8 || len(q.Codes) != n || len(q.Scale) == 0 || len(q.Scale) != len(q.Zero) || n%len(q.Scale) != 0 {
		return nil, fmt.Errorf("tensor %q: inconsistent quantization (bits %d, %d codes, %d scales, %d zero points, %d values)",
			t.Name, q.Bits, len(q.Codes), len(q.Scale), len(q.Zero), n)
	}
	per := n / len(q.Scale)
	for i, c := range q.Codes {
		ch := i / per
		if c < q.QMin || c-q.QMin >= 1<<q.Bits || math.Float32bits(float32(c-q.Zero[ch])*q.Scale[ch]) != math.Float32bits(t.Data[i]) {
			return nil, fmt.Errorf("tensor %q: element %d (%g) is not code %d of its %d-bit quantization", t.Name, i, t.Data[i], c, q.Bits)
		}
	}
	keep := func(i int) bool { return q.Codes[i] != q.Zero[i/per] }
	best := (*stored)(nil)
	for _, ix := range indexChoices(t.Shape, n, keep) {
		var syms []uint16
		for i := range n {
			if ix.format == IndexNone || keep(i) {
				syms = append(syms, uint16(q.Codes[i]-q.QMin))
			}
		}
		for _, v := range symbolChoices(syms, q.Bits) {
			c := *s
			c.encoding = EncQuant
			if ix.format != IndexNone {
				c.encoding = EncSparseQuant
			}
			c.indexFormat, c.index, c.valueFormat, c.codes = ix.format, ix.bytes, v.format, v.bytes
			c.count, c.bits, c.scale, c.zero, c.qmin = int64(len(syms)), int8(q.Bits), q.Scale, q.Zero, q.QMin
			if !slices.ContainsFunc(q.Zero, func(z int32) bool { return z != 0 }) {
				c.zero = nil // symmetric: every zero point is 0
			}
			if best == nil || c.size() < best.size() {
				best = &c
			}
		}
	}
	return best, nil
}

func encodeFloat(t *Tensor, s *stored, n int) (*stored, error) {
	keep := func(i int) bool { return math.Float32bits(t.Data[i]) != 0 } // −0 is kept: it is not +0's bits
	// A codebook when few distinct values occur (exact), e.g. a weight
	// shared by clustering or quantized per tensor.
	var book []float32
	lookup := map[uint32]uint16{}
	for _, v := range t.Data {
		b := math.Float32bits(v)
		if _, ok := lookup[b]; ok || b == 0 {
			continue
		}
		if len(lookup) == maxSymbols {
			book = nil
			break
		}
		lookup[b] = 0
		book = append(book, v)
	}
	if book != nil {
		slices.SortFunc(book, cmpBits)
		for k, v := range book {
			lookup[math.Float32bits(v)] = uint16(k)
		}
	}
	best := (*stored)(nil)
	consider := func(c stored) {
		if best == nil || c.size() < best.size() {
			best = &c
		}
	}
	for _, ix := range indexChoices(t.Shape, n, keep) {
		var vals []float32
		for i := range n {
			if ix.format == IndexNone || keep(i) {
				vals = append(vals, t.Data[i])
			}
		}
		c := *s
		c.encoding = EncDense
		if ix.format != IndexNone {
			c.encoding = EncSparse
		}
		c.indexFormat, c.index, c.values, c.count = ix.format, ix.bytes, vals, int64(len(vals))
		consider(c)
		c.values, c.valueFormat, c.codes = nil, ValueF32Huff, floatPlanes(vals)
		consider(c)
		if book == nil {
			continue
		}
		// Codebook: the table holds 0 too when dense values include it.
		cb := book
		var syms []uint16
		zeroSym := -1
		for _, v := range vals {
			if math.Float32bits(v) == 0 {
				if zeroSym < 0 {
					zeroSym = len(cb)
					cb = append(slices.Clip(cb), 0)
				}
				syms = append(syms, uint16(zeroSym))
				continue
			}
			syms = append(syms, lookup[math.Float32bits(v)])
		}
		if len(cb) > maxSymbols {
			continue
		}
		width := max(1, bits.Len(uint(len(cb)-1)))
		for _, v := range symbolChoices(syms, width) {
			c := *s
			c.encoding = EncCodebook
			if ix.format != IndexNone {
				c.encoding = EncSparseCodebook
			}
			c.indexFormat, c.index, c.valueFormat, c.codes = ix.format, ix.bytes, v.format, v.bytes
			c.count, c.values = int64(len(syms)), cb // the values column holds the table
			if v.format == ValuePacked {
				c.bits = int8(width)
			}
			consider(c)
		}
	}
	return best, nil
}

// floatPlanes codes float32 values losslessly: the top byte (sign and
// exponent) and the next byte of every value Huffman-coded as two streams,
// each preceded by its length as a uvarint, then the low two bytes raw
// (little-endian). Values of one tensor share few exponents, so the top
// bytes cost a few bits instead of sixteen.
func floatPlanes(v []float32) []byte {
	hi, mid := make([]uint16, len(v)), make([]uint16, len(v))
	low := make([]byte, 0, 2*len(v))
	for i, x := range v {
		b := math.Float32bits(x)
		hi[i], mid[i] = uint16(b>>24), uint16(b>>16&0xff)
		low = binary.LittleEndian.AppendUint16(low, uint16(b))
	}
	h, m := huffEncode(hi), huffEncode(mid)
	out := binary.AppendUvarint(nil, uint64(len(h)))
	out = append(out, h...)
	out = binary.AppendUvarint(out, uint64(len(m)))
	out = append(out, m...)
	return append(out, low...)
}

func unfloatPlanes(b []byte, count int) ([]float32, error) {
	var planes [2][]uint16
	for k := range planes {
		n, w := binary.Uvarint(b)
		if w <= 0 || n > uint64(len(b)-w) {
			return nil, errors.New("float plane length runs past the data")
		}
		syms, err := huffDecode(b[w:w+int(n)], count)
		if err != nil {
			return nil, err
		}
		if len(syms) != count {
			return nil, fmt.Errorf("float plane of %d values for %d", len(syms), count)
		}
		planes[k], b = syms, b[w+int(n):]
	}
	if len(b) != 2*count {
		return nil, fmt.Errorf("%d low bytes for %d values", len(b), count)
	}
	out := make([]float32, count)
	for i := range out {
		out[i] = math.Float32frombits(uint32(planes[0][i])<<24 | uint32(planes[1][i])<<16 | uint32(binary.LittleEndian.Uint16(b[2*i:])))
	}
	return out, nil
}

func cmpBits(a, b float32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return int(math.Float32bits(a)) - int(math.Float32bits(b))
}

// checkShape returns a shape's element count, refusing negative dimensions,
// overflow, and (limit ≥ 0) more than limit elements.
func checkShape(shape []int, limit int) (int, error) {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		if d > 0 && n > math.MaxInt32/d {
			return 0, fmt.Errorf("shape %v holds more than 2^31 elements", shape)
		}
		n *= d
	}
	if limit >= 0 && n > limit {
		return 0, fmt.Errorf("shape %v (%d elements) is absurd for a file of this size", shape, n)
	}
	return n, nil
}

// decode rebuilds a tensor from its row; limit caps its element count.
func decode(s *stored, limit int) (*Tensor, error) {
	shape := make([]int, len(s.shape))
	for i, d := range s.shape {
		if d < 0 || d > math.MaxInt32 {
			return nil, fmt.Errorf("dimension %d in shape %v", d, s.shape)
		}
		shape[i] = int(d)
	}
	n, err := checkShape(shape, limit)
	if err != nil {
		return nil, err
	}
	t := &Tensor{Name: s.name, Role: s.role, Shape: shape, Encoding: s.encoding, IndexFormat: s.indexFormat,
		ValueFormat: s.valueFormat, Bits: int(s.bits), StoredBytes: s.size()}
	if s.count < 0 || s.count > int64(n) {
		return nil, fmt.Errorf("%d stored values for %d elements", s.count, n)
	}
	count := int(s.count)
	if s.encoding == EncMask {
		if s.role != RoleMask || s.indexFormat != IndexBitmap || len(s.index) != (n+7)/8 {
			return nil, fmt.Errorf("mask needs a bitmap of %d bytes, has %s of %d", (n+7)/8, s.indexFormat, len(s.index))
		}
		t.Mask = make([]byte, n)
		for i := range n {
			t.Mask[i] = s.index[i>>3] >> (i & 7) & 1
		}
		return t, nil
	}
	sparse := s.encoding == EncSparse || s.encoding == EncSparseQuant || s.encoding == EncSparseCodebook
	if sparse == (s.indexFormat == IndexNone) {
		return nil, fmt.Errorf("encoding %s with index format %s", s.encoding, s.indexFormat)
	}
	pos, err := decodeIndex(s, shape, n, count)
	if err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	if pos == nil && count != n {
		return nil, fmt.Errorf("%d stored values for %d dense elements", count, n)
	}
	var vals []float32
	switch s.encoding {
	case EncDense, EncSparse:
		switch {
		case s.valueFormat == ValueF32Huff && len(s.values) == 0:
			if vals, err = unfloatPlanes(s.codes, count); err != nil {
				return nil, fmt.Errorf("values: %w", err)
			}
		case s.valueFormat != ValueF32 || len(s.values) != count:
			return nil, fmt.Errorf("%s needs %d float values, has %d (%s)", s.encoding, count, len(s.values), s.valueFormat)
		default:
			vals = s.values
		}
	case EncQuant, EncSparseQuant, EncCodebook, EncSparseCodebook:
		syms, err := decodeSymbols(s, count)
		if err != nil {
			return nil, fmt.Errorf("values: %w", err)
		}
		vals = make([]float32, count)
		if s.encoding == EncCodebook || s.encoding == EncSparseCodebook {
			t.Bits = max(1, bits.Len(uint(len(s.values)-1))) // the index width the table needs
			for i, k := range syms {
				if int(k) >= len(s.values) {
					return nil, fmt.Errorf("codebook index %d outside a table of %d", k, len(s.values))
				}
				vals[i] = s.values[k]
			}
			break
		}
		if err := dequantize(s, t, n, pos, syms, vals); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown encoding %q", s.encoding)
	}
	if pos == nil {
		t.Data = vals // already the tensor's own copy (read rows are cloned)
	} else {
		t.Data = make([]float32, n)
		for k, p := range pos {
			t.Data[p] = vals[k]
		}
	}
	if t.Quant != nil && pos != nil {
		// Elements not stored hold their channel's zero point.
		per := n / len(t.Quant.Scale)
		codes := make([]int32, n)
		for i := range codes {
			codes[i] = t.Quant.Zero[i/per]
		}
		for k, p := range pos {
			codes[p] = t.Quant.Codes[k]
		}
		t.Quant.Codes = codes
	}
	return t, nil
}

func dequantize(s *stored, t *Tensor, n int, pos []int, syms []uint16, vals []float32) error {
	ch := len(s.scale)
	zero := s.zero
	if len(zero) == 0 && ch > 0 {
		zero = make([]int32, ch) // stored empty when all are 0
	}
	if ch == 0 || ch != len(zero) || n%ch != 0 || s.bits < 2 || s.bits > 8 {
		return fmt.Errorf("quantization with %d scales, %d zero points, %d bits for %d elements", ch, len(s.zero), s.bits, n)
	}
	qmin := s.qmin
	per := n / ch
	q := &Quant{Bits: int(s.bits), QMin: qmin, Scale: s.scale, Zero: zero, Codes: make([]int32, len(syms))}
	for k, sym := range syms {
		if int(sym) >= 1<<s.bits {
			return fmt.Errorf("code %d exceeds %d bits", sym, s.bits)
		}
		p := k
		if pos != nil {
			p = pos[k]
		}
		c := p / per
		code := int32(sym) + qmin
		q.Codes[k] = code
		vals[k] = float32(code-zero[c]) * s.scale[c]
	}
	t.Quant = q
	return nil
}

func decodeSymbols(s *stored, count int) ([]uint16, error) {
	switch s.valueFormat {
	case ValuePacked:
		return unpack(s.codes, count, int(s.bits))
	case ValueHuffman:
		syms, err := huffDecode(s.codes, count)
		if err == nil && len(syms) != count {
			err = fmt.Errorf("%d codes for %d values", len(syms), count)
		}
		return syms, err
	}
	return nil, fmt.Errorf("value format %q for encoding %s", s.valueFormat, s.encoding)
}

// decodeIndex returns the positions of the stored elements (nil: all).
func decodeIndex(s *stored, shape []int, n, count int) ([]int, error) {
	var pos []int
	switch s.indexFormat {
	case IndexNone:
		return nil, nil
	case IndexBitmap:
		if len(s.index) != (n+7)/8 {
			return nil, fmt.Errorf("bitmap of %d bytes for %d elements", len(s.index), n)
		}
		pos = make([]int, 0, count)
		for i := range n {
			if s.index[i>>3]>>(i&7)&1 == 1 {
				if len(pos) == count {
					return nil, fmt.Errorf("bitmap marks more than the %d stored values", count)
				}
				pos = append(pos, i)
			}
		}
	case IndexDelta:
		syms, err := huffDecode(s.index, count+n/255+1)
		if err != nil {
			return nil, err
		}
		pos = make([]int, 0, count)
		p := -1
		for _, g := range syms {
			p += int(g)
			if g == 255 {
				continue
			}
			p++
			if p >= n || len(pos) == count {
				return nil, fmt.Errorf("delta index runs past %d elements or %d values", n, count)
			}
			pos = append(pos, p)
		}
	case IndexCSR:
		if len(shape) < 2 || shape[0] == 0 || len(s.index) < 1 {
			return nil, errors.New("csr index for a tensor without rows")
		}
		rows, cols := shape[0], n/shape[0]
		w := int(s.index[0])
		if (w != 2 && w != 4) || len(s.index) != 1+4*rows+w*count {
			return nil, fmt.Errorf("csr index of %d bytes for %d rows and %d values", len(s.index), rows, count)
		}
		b := s.index[1:]
		cb := b[4*rows:]
		pos = make([]int, 0, count)
		k := 0
		for r := range rows {
			c := int(binary.LittleEndian.Uint32(b[4*r:]))
			if c > count-k {
				return nil, errors.New("csr row counts exceed the stored values")
			}
			last := -1
			for range c {
				var col int
				if w == 2 {
					col = int(binary.LittleEndian.Uint16(cb[2*k:]))
				} else {
					col = int(binary.LittleEndian.Uint32(cb[4*k:]))
				}
				if col >= cols || col <= last {
					return nil, fmt.Errorf("csr column %d in row %d out of order or range", col, r)
				}
				last = col
				pos = append(pos, r*cols+col)
				k++
			}
		}
	default:
		return nil, fmt.Errorf("unknown index format %q", s.indexFormat)
	}
	if len(pos) != count {
		return nil, fmt.Errorf("index gives %d positions for %d stored values", len(pos), count)
	}
	return pos, nil
}
