package cluster

import (
	"testing"

	"github.com/nats-io/nats.go"
)

// FuzzDataPart: a data message's headers and body, whatever they hold,
// are refused or placed within the chunk they claim — never a panic, and
// nothing sized from the message beyond the vector the receiver runs.
func FuzzDataPart(f *testing.F) {
	md := meta{job: "job", phase: 1, gen: 2, step: 3, off: 8, n: 64}
	h := md.header()
	f.Add(h.Get(hPhase), h.Get(hGen), h.Get(hStep), h.Get(hOff), h.Get(hLen), encodeInt64s(nil, []int64{1, -2, 1 << 40}), true)
	f.Add(h.Get(hPhase), h.Get(hGen), h.Get(hStep), h.Get(hOff), h.Get(hLen), encodeFloat32s(nil, []float32{1, 2, 3}), false)
	f.Add("1", "2", "3", "0", "1099511627776", []byte{1, 2, 3, 4}, false)
	const running = 64 // the vector the receiver runs
	f.Fuzz(func(t *testing.T, phase, gen, step, off, n string, data []byte, partial bool) {
		h := nats.Header{}
		h.Set(hJob, "job")
		h.Set(hPhase, phase)
		h.Set(hGen, gen)
		h.Set(hStep, step)
		h.Set(hOff, off)
		h.Set(hLen, n)
		md, err := parseMeta(h)
		if err != nil || md.n != running || md.off < 0 || md.off >= md.n {
			return // refused by accept, or held unsized
		}
		var count int
		if partial {
			count, err = int64sCount(data)
		} else {
			count, err = float32sCount(data)
		}
		if err != nil {
			return
		}
		for j := range 3 {
			lo, hi := chunk(md.n, 3, j)
			a := &assembly{lo: lo, hi: hi, parts: map[int]bool{}, i64: make([]int64, hi-lo), f32: make([]float32, hi-lo)}
			err := a.place(md.off, count, func(at int) error {
				if partial {
					decodeInt64s(a.i64[at:at+count], data)
					return nil
				}
				return decodeFloat32s(a.f32[at:at+count], data)
			})
			if err == nil && (md.off < lo || md.off+count > hi) {
				t.Fatalf("part [%d, %d) placed in [%d, %d)", md.off, md.off+count, lo, hi)
			}
		}
	})
}
