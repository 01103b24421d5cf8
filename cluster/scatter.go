package cluster

import (
	"sort"
	"time"

	"github.com/lathe-ml/lathe/trainer"
)

// scatter sends the other owners their ranges of a step's fixed-point
// partial (the reduce-scatter) while the trainer computes it: Compute
// reports each range it finishes (trainer.Finishing), the others' first,
// and every part whose elements are all finished goes out at once — the
// parts cut as sendInt64s cuts them, so a receiver cannot tell the
// difference — and flush sends the rest when Compute returns. Only the
// goroutine that calls Compute uses it.
type scatter struct {
	r       *Replica
	p       *sent
	members []string
	rank    int
	per     int      // a part's elements
	next    []int    // by member: where its next unsent part starts
	fin     [][2]int // the finished ranges, merged, in order
	// sending is the time done spent sending: the exchange's, not the
	// computation's, though Compute called it.
	sending time.Duration
}

// newScatter prepares the reduce-scatter of p among members, the replica
// being rank.
func (r *Replica) newScatter(p *sent, members []string, rank int) *scatter {
	s := &scatter{r: r, p: p, members: members, rank: rank, per: r.partElems(8), next: make([]int, len(members))}
	for j := range members {
		s.next[j], _ = chunk(p.n, len(members), j)
	}
	return s
}

// finishing is what the trainer's Compute reports to.
func (s *scatter) finishing() *trainer.Finishing {
	lo, hi := chunk(s.p.n, len(s.members), s.rank)
	return &trainer.Finishing{Lo: lo, Hi: hi, Done: s.done}
}

// done records [lo, hi) as finished and sends the parts it completes.
func (s *scatter) done(lo, hi int) {
	if lo >= hi {
		return
	}
	i := sort.Search(len(s.fin), func(i int) bool { return s.fin[i][1] >= lo })
	j := i
	for j < len(s.fin) && s.fin[j][0] <= hi { // overlapping or adjacent: merged
		lo, hi = min(lo, s.fin[j][0]), max(hi, s.fin[j][1])
		j++
	}
	s.fin = append(s.fin[:i], append([][2]int{{lo, hi}}, s.fin[j:]...)...)
	start := time.Now()
	s.send()
	s.sending += time.Since(start)
}

// flush sends every part not sent yet — to a member whose range is
// empty, one empty part, as sendInt64s does.
func (s *scatter) flush() {
	s.fin = append(s.fin[:0], [2]int{0, s.p.n})
	s.send()
	for j, o := range s.members {
		if lo, hi := chunk(s.p.n, len(s.members), j); j != s.rank && lo == hi {
			md := s.meta()
			md.off = lo
			s.r.sendPart([]string{o}, part{kind: frameRS, md: md, data: encodeInt64s(nil, nil)})
		}
	}
}

// meta is the partial's parts' metadata, without an offset.
func (s *scatter) meta() meta {
	return meta{job: s.r.job, phase: s.r.phase, gen: s.p.gen, step: s.p.step, n: s.p.n}
}

// finishedTo is the end of the finished range that holds a, or a where
// none does.
func (s *scatter) finishedTo(a int) int {
	i := sort.Search(len(s.fin), func(i int) bool { return s.fin[i][1] > a })
	if i < len(s.fin) && s.fin[i][0] <= a {
		return s.fin[i][1]
	}
	return a
}

// send sends each other member the parts of its range that are finished,
// in order, up to the first that is not.
func (s *scatter) send() {
	md := s.meta()
	buf := encodeBufs.Get().(*[]byte)
	defer encodeBufs.Put(buf)
	for j, o := range s.members {
		if j == s.rank {
			continue
		}
		_, hi := chunk(s.p.n, len(s.members), j)
		for a := s.next[j]; a < hi; a = s.next[j] {
			b := min(a+s.per, hi)
			if s.finishedTo(a) < b {
				break
			}
			md.off = a
			*buf = encodeInt64s(*buf, s.p.i64[a:b])
			s.r.sendPart([]string{o}, part{kind: frameRS, md: md, data: *buf})
			s.next[j] = b
		}
	}
}
