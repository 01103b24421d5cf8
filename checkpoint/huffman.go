package checkpoint

import (
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// maxCodeLen bounds Huffman code lengths, so that a table stores each
// length in four bits and a decoder reads at most 15 bits per symbol.
const maxCodeLen = 15

// maxSymbols is the largest alphabet an entropy-coded stream uses (8-bit
// quantization codes, codebook indices and index gaps all fit).
const maxSymbols = 256

// bitWriter appends bits, most significant first.
type bitWriter struct {
	buf  []byte
	acc  uint64
	nacc uint
}

func (w *bitWriter) write(code uint32, n uint) {
	w.acc = w.acc<<n | uint64(code)
	w.nacc += n
	for w.nacc >= 8 {
		w.nacc -= 8
		w.buf = append(w.buf, byte(w.acc>>w.nacc))
	}
}

func (w *bitWriter) bytes() []byte {
	if w.nacc > 0 {
		w.buf = append(w.buf, byte(w.acc<<(8-w.nacc)))
		w.nacc = 0
	}
	return w.buf
}

// bitReader reads bits, most significant first, refusing to run past its
// buffer.
type bitReader struct {
	buf []byte
	pos int // bit position
}

var errShortStream = errors.New("bit stream ends early")

func (r *bitReader) bit() (uint32, error) {
	if r.pos >= 8*len(r.buf) {
		return 0, errShortStream
	}
	b := uint32(r.buf[r.pos>>3]>>(7-r.pos&7)) & 1
	r.pos++
	return b, nil
}

func (r *bitReader) read(n uint) (uint32, error) {
	if r.pos+int(n) > 8*len(r.buf) {
		return 0, errShortStream
	}
	var v uint32
	for range n {
		b, _ := r.bit()
		v = v<<1 | b
	}
	return v, nil
}

// pack writes symbols of width bits each.
func pack(syms []uint16, bits int) []byte {
	w := bitWriter{buf: make([]byte, 0, (len(syms)*bits+7)/8)}
	for _, s := range syms {
		w.write(uint32(s), uint(bits))
	}
	return w.bytes()
}

// unpack reads n symbols of width bits.
func unpack(b []byte, n, bits int) ([]uint16, error) {
	if bits < 1 || bits > 16 {
		return nil, fmt.Errorf("packed width %d bits outside [1, 16]", bits)
	}
	if need := (n*bits + 7) / 8; need != len(b) {
		return nil, fmt.Errorf("packed stream of %d values × %d bits needs %d bytes, has %d", n, bits, need, len(b))
	}
	out := make([]uint16, n)
	r := bitReader{buf: b}
	for i := range out {
		v, err := r.read(uint(bits))
		if err != nil {
			return nil, err
		}
		out[i] = uint16(v)
	}
	return out, nil
}

// huffmanLengths returns code lengths (≤ maxCodeLen) for symbol counts;
// symbols with count 0 get length 0. A lone symbol gets length 1.
func huffmanLengths(counts []int) []uint8 {
	c := slices.Clone(counts)
	for {
		lens := buildLengths(c)
		if slices.Max(lens) <= maxCodeLen {
			return lens
		}
		// Too deep: flatten the distribution and build again.
		for i, v := range c {
			if v > 0 {
				c[i] = (v + 1) / 2
			}
		}
	}
}

type hnode struct {
	count       int
	sym         int // leaf symbol, or −1
	left, right *hnode
}

type hheap []*hnode

func (h hheap) Len() int { return len(h) }
func (h hheap) Less(i, j int) bool {
	if h[i].count != h[j].count {
		return h[i].count < h[j].count
	}
	return h[i].sym < h[j].sym // deterministic ties
}
func (h hheap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *hheap) Push(x any)   { *h = append(*h, x.(*hnode)) }
func (h *hheap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func buildLengths(counts []int) []uint8 {
	lens := make([]uint8, len(counts))
	h := hheap{}
	for s, n := range counts {
		if n > 0 {
			h = append(h, &hnode{count: n, sym: s})
		}
	}
	switch len(h) {
	case 0:
		return lens
	case 1:
		lens[h[0].sym] = 1
		return lens
	}
	heap.Init(&h)
	next := len(counts) // internal nodes order after every leaf
	for h.Len() > 1 {
		a, b := heap.Pop(&h).(*hnode), heap.Pop(&h).(*hnode)
		heap.Push(&h, &hnode{count: a.count + b.count, sym: next, left: a, right: b})
		next++
	}
	var walk func(n *hnode, d uint8)
	walk = func(n *hnode, d uint8) {
		if n.left == nil {
			lens[n.sym] = min(d, 255)
			return
		}
		walk(n.left, d+1)
		walk(n.right, d+1)
	}
	walk(h[0], 0)
	return lens
}

// canonical assigns canonical codes to lengths (shorter codes first, then
// by symbol).
func canonical(lens []uint8) []uint32 {
	codes := make([]uint32, len(lens))
	var count [maxCodeLen + 1]int
	for _, l := range lens {
		count[l]++
	}
	count[0] = 0
	var next [maxCodeLen + 2]uint32
	code := uint32(0)
	for l := 1; l <= maxCodeLen; l++ {
		code = (code + uint32(count[l-1])) << 1
		next[l] = code
	}
	for s, l := range lens {
		if l > 0 {
			codes[s] = next[l]
			next[l]++
		}
	}
	return codes
}

// lengthNibbles writes code lengths as nibbles: a length 1–15 as itself;
// a run of r unused symbols (1–16) as 0 followed by r−1.
func lengthNibbles(lens []uint8) []uint8 {
	var out []uint8
	for i := 0; i < len(lens); {
		if lens[i] != 0 {
			out = append(out, lens[i])
			i++
			continue
		}
		r := 0
		for i < len(lens) && lens[i] == 0 && r < 16 {
			i++
			r++
		}
		out = append(out, 0, uint8(r-1))
	}
	return out
}

// packNibbles packs nibbles two to a byte, high first, padding with 0.
func packNibbles(n []uint8) []byte {
	out := make([]byte, 0, (len(n)+1)/2)
	for i := 0; i < len(n); i += 2 {
		b := n[i] << 4
		if i+1 < len(n) {
			b |= n[i+1]
		}
		out = append(out, b)
	}
	return out
}

// huffEncode entropy-codes symbols (< maxSymbols): a table of code lengths
// (the alphabet size as a uvarint, then the lengths as nibbles with runs
// of unused symbols shortened, see lengthNibbles), the symbol count as a
// uvarint, then the bit stream.
func huffEncode(syms []uint16) []byte {
	nsym, _, lens := huffmanTable(syms)
	codes := canonical(lens)
	out := binary.AppendUvarint(nil, uint64(nsym))
	out = append(out, packNibbles(lengthNibbles(lens))...)
	out = binary.AppendUvarint(out, uint64(len(syms)))
	w := bitWriter{buf: out}
	for _, s := range syms {
		w.write(codes[s], uint(lens[s]))
	}
	return w.bytes()
}

// huffmanTable counts the symbols and returns the alphabet size (the
// largest symbol + 1), the counts and the code lengths.
func huffmanTable(syms []uint16) (nsym int, counts []int, lens []uint8) {
	nsym = 1
	counts = make([]int, maxSymbols)
	for _, s := range syms {
		counts[s]++
		nsym = max(nsym, int(s)+1)
	}
	counts = counts[:nsym]
	return nsym, counts, huffmanLengths(counts)
}

// huffSize is the length huffEncode would return, without encoding.
func huffSize(syms []uint16) int {
	nsym, counts, lens := huffmanTable(syms)
	bits := 0
	for s, n := range counts {
		bits += n * int(lens[s])
	}
	return uvarintLen(uint64(nsym)) + (len(lengthNibbles(lens))+1)/2 + uvarintLen(uint64(len(syms))) + (bits+7)/8
}

func uvarintLen(v uint64) int { return len(binary.AppendUvarint(nil, v)) }

// huffDecode reverses huffEncode, refusing more than limit symbols.
func huffDecode(b []byte, limit int) ([]uint16, error) {
	nsym, k := binary.Uvarint(b)
	if k <= 0 || nsym == 0 || nsym > maxSymbols {
		return nil, errors.New("bad Huffman table size")
	}
	b = b[k:]
	nib := func(i int) (uint8, bool) {
		if i/2 >= len(b) {
			return 0, false
		}
		if i%2 == 0 {
			return b[i/2] >> 4, true
		}
		return b[i/2] & 15, true
	}
	lens := make([]uint8, 0, nsym)
	i := 0
	for len(lens) < int(nsym) {
		v, ok := nib(i)
		if !ok {
			return nil, errors.New("entropy-coded stream: its Huffman table ends early")
		}
		i++
		if v != 0 {
			lens = append(lens, v)
			continue
		}
		r, ok := nib(i)
		if !ok {
			return nil, errors.New("entropy-coded stream: its Huffman table ends early")
		}
		i++
		if len(lens)+int(r)+1 > int(nsym) {
			return nil, errors.New("entropy-coded stream: its Huffman table runs past its alphabet")
		}
		for range int(r) + 1 {
			lens = append(lens, 0)
		}
	}
	b = b[(i+1)/2:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(limit) {
		return nil, fmt.Errorf("entropy-coded stream claims %d symbols, at most %d fit", n, limit)
	}
	b = b[k:]
	// Canonical decoding (as in zlib's puff): count codes per length and
	// list symbols in code order.
	var count [maxCodeLen + 1]int
	for _, l := range lens {
		count[l]++
	}
	count[0] = 0
	left := 1 // an over-subscribed table cannot come from huffEncode
	for l := 1; l <= maxCodeLen; l++ {
		left = left<<1 - count[l]
		if left < 0 {
			return nil, errors.New("entropy-coded stream: its Huffman table is over-subscribed")
		}
	}
	var offs [maxCodeLen + 2]int
	for l := 1; l <= maxCodeLen; l++ {
		offs[l+1] = offs[l] + count[l]
	}
	order := make([]uint16, 0, nsym)
	for l := 1; l <= maxCodeLen; l++ {
		for s, sl := range lens {
			if int(sl) == l {
				order = append(order, uint16(s))
			}
		}
	}
	if n > uint64(8*len(b)) { // every code is at least one bit
		return nil, errShortStream
	}
	out := make([]uint16, 0, n)
	r := bitReader{buf: b}
	for uint64(len(out)) < n {
		code, first, index := 0, 0, 0
		found := false
		for l := 1; l <= maxCodeLen; l++ {
			bit, err := r.bit()
			if err != nil {
				return nil, err
			}
			code |= int(bit)
			c := count[l]
			if code-c < first {
				out = append(out, order[index+(code-first)])
				found = true
				break
			}
			index += c
			first = (first + c) << 1
			code <<= 1
		}
		if !found {
			return nil, errors.New("invalid Huffman code")
		}
	}
	return out, nil
}
