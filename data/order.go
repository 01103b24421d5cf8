package data

import "math/rand/v2"

// Stream constants keep the random streams of shuffling, augmentation and
// dropout apart although they share the recipe's seed.
const (
	streamShuffle uint64 = 0x53485546464c45 // "SHUFFLE"
	streamAugment uint64 = 0x4155474d454e54 // "AUGMENT"
	streamFlip    uint64 = 0x464c4950       // "FLIP"
	streamCut     uint64 = 0x435554         // "CUT"
)

// Order returns the sample order of one epoch: a permutation of [0, n) that
// is a pure function of (seed, epoch, n).
func Order(seed uint64, epoch, n int) []int {
	r := rand.New(rand.NewPCG(seed^streamShuffle, uint64(epoch)))
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	r.Shuffle(n, func(i, j int) { p[i], p[j] = p[j], p[i] })
	return p
}

// Steps is the number of full batches of size batch in an epoch of n samples
// (the last partial batch is dropped in training).
func Steps(n, batch int) int { return n / batch }

// BatchIndices returns the sample indices of step s of an epoch's order.
func BatchIndices(order []int, batch, s int) []int { return order[s*batch : (s+1)*batch] }

// Share returns worker k of n's contiguous share of a batch: samples
// [k·B/n, (k+1)·B/n). The shares of k = 0..n-1 partition the batch.
func Share(batch []int, k, n int) []int {
	if n <= 0 || k < 0 || k >= n {
		panic("data: Share: worker index out of range")
	}
	b := len(batch)
	return batch[k*b/n : (k+1)*b/n]
}

// Augment describes input augmentation.
type Augment struct {
	// Shift is the largest random translation in pixels, in each direction
	// (0 disables augmentation). Pixels shifted in are 0.
	Shift int
	// Flip mirrors half the images left to right (valid for clothes, not
	// for digits), drawn from a stream of its own: turning it on leaves
	// every sample's shift as it was.
	Flip bool
	// Truncate is the share of text windows cut short each epoch (a stream
	// of its own): such a window keeps a random length of its bytes, at
	// least truncateMin of them, the rest padding (0) — short texts, as a
	// window at a document's end holds.
	Truncate float64
}

// truncateMin is the fewest bytes a truncated window keeps.
const truncateMin = 8

// On says whether any augmentation is on.
func (a Augment) On() bool { return a.Shift > 0 || a.Flip || a.Truncate > 0 }

// Batcher fills input and label buffers for a list of sample indices.
type Batcher struct {
	Set     *Set
	Augment Augment
	Seed    uint64
}

// Fill writes the samples idx into x ([len(idx), Features()] as pixel/255)
// and their labels into y (as float32 class numbers; LabelsPer() each).
// With augmentation on,
// each sample's shift is a pure function of (seed, epoch, sample index), so
// any worker filling any share of a batch produces the same pixels.
func (b *Batcher) Fill(x, y []float32, idx []int, epoch int) {
	s := b.Set
	f := s.Features()
	for i, id := range idx {
		dst := x[i*f : (i+1)*f]
		if s.Floats != nil { // a user's numbers, as they are
			copy(dst, s.Floats[id*f:(id+1)*f])
		}
		src := s.Images[min(id*f, len(s.Images)):min((id+1)*f, len(s.Images))]
		switch {
		case s.Floats != nil:
		case b.Augment.Truncate > 0:
			keep := b.Kept(src, id, epoch)
			for j, p := range src {
				dst[j] = 0
				if j < keep {
					dst[j] = float32(p) * (1.0 / 255)
				}
			}
		case b.Augment.Shift == 0 && !b.Augment.Flip:
			for j, p := range src {
				dst[j] = float32(p) * (1.0 / 255)
			}
		default:
			dy, dx := b.Shift(id, epoch)
			shift(dst, src, s.Rows, s.Cols, s.Channels, dy, dx, b.Flipped(id, epoch))
		}
		p := s.LabelsPer()
		for j, l := range s.Labels[id*p : (id+1)*p] {
			y[i*p+j] = float32(l)
		}
	}
}

// Shift is the translation (rows down, columns right) sample id gets in
// epoch under augmentation: a pure function of (seed, epoch, id).
func (b *Batcher) Shift(id, epoch int) (dy, dx int) {
	if b.Augment.Shift == 0 {
		return 0, 0
	}
	r := rand.New(rand.NewPCG(b.Seed^streamAugment, uint64(epoch)<<32|uint64(id)))
	span := 2*b.Augment.Shift + 1
	return r.IntN(span) - b.Augment.Shift, r.IntN(span) - b.Augment.Shift
}

// Kept is how many of a text window's bytes sample id keeps in epoch under
// truncation: all, or (with probability Truncate) a length drawn uniformly
// from [truncateMin, its length] — a pure function of (seed, epoch, id).
func (b *Batcher) Kept(window []byte, id, epoch int) int {
	n := len(window)
	for n > 1 && window[n-1] == 0 { // its length: up to its last byte
		n--
	}
	if b.Augment.Truncate == 0 || n <= truncateMin {
		return len(window)
	}
	r := rand.New(rand.NewPCG(b.Seed^streamCut, uint64(epoch)<<32|uint64(id)))
	if r.Float64() >= b.Augment.Truncate {
		return len(window)
	}
	return truncateMin + r.IntN(n-truncateMin+1)
}

// Flipped says whether sample id is mirrored in epoch under augmentation:
// a pure function of (seed, epoch, id), with probability one half.
func (b *Batcher) Flipped(id, epoch int) bool {
	if !b.Augment.Flip {
		return false
	}
	r := rand.New(rand.NewPCG(b.Seed^streamFlip, uint64(epoch)<<32|uint64(id)))
	return r.IntN(2) == 1
}

// shift writes src — mirrored left to right when flip — translated by
// (dy, dx) pixels into dst, zero-filling.
func shift(dst []float32, src []byte, rows, cols, ch, dy, dx int, flip bool) {
	ch = max(ch, 1)
	w := cols * ch
	for r := 0; r < rows; r++ {
		sr := r - dy
		row := dst[r*w : (r+1)*w]
		if sr < 0 || sr >= rows {
			clear(row)
			continue
		}
		if !flip {
			// The columns that meet the source, one run of the row.
			lo, hi := max(0, dx), min(cols, cols+dx)
			if lo >= hi {
				clear(row)
				continue
			}
			clear(row[:lo*ch])
			clear(row[hi*ch:])
			from := src[(sr*cols+lo-dx)*ch : (sr*cols+hi-dx)*ch]
			for k, v := range from {
				row[lo*ch+k] = float32(v) * (1.0 / 255)
			}
			continue
		}
		for c := 0; c < cols; c++ {
			sc := c - dx
			px := row[c*ch : (c+1)*ch]
			switch {
			case sc < 0 || sc >= cols:
				clear(px)
				continue
			case flip:
				sc = cols - 1 - sc
			}
			for k, v := range src[(sr*cols+sc)*ch : (sr*cols+sc+1)*ch] {
				px[k] = float32(v) * (1.0 / 255)
			}
		}
	}
}
