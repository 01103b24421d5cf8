package infer

import (
	"math/rand/v2"
	"testing"
)

// TestClassOffsets: on logits that under-predict a rare class (its score
// shifted down), the tuned offsets raise that class and the macro
// accuracy; a class without samples has no recall.
func TestClassOffsets(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var logits []float32
	var labels []byte
	for s := range 3000 {
		y := byte(0)
		if s%10 == 0 {
			y = 1 // a tenth of the samples
		}
		l := []float32{float32(r.NormFloat64()), float32(r.NormFloat64())}
		l[y] += 1.5
		l[1] -= 1 // the rare class under-predicted
		logits = append(logits, l...)
		labels = append(labels, y)
	}
	before, _ := Macro(logits, labels, 2, nil)
	off := ClassOffsets(logits, labels, 2)
	after, recall := Macro(logits, labels, 2, off)
	if off[1]-off[0] < 0.5 || after < before+0.05 || recall[1] < 0.7 {
		t.Errorf("offsets %v: macro %.3f → %.3f, recalls %v", off, before, after, recall)
	}
	if m, rec := Macro(logits[:4], labels[:2], 3, nil); len(rec) != 3 || rec[2] == rec[2] || m < 0 {
		t.Errorf("a class without samples: macro %v, recalls %v", m, rec)
	}
}
