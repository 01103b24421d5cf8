package cluster

import (
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"github.com/nats-io/nats.go"
)

// A step's exchange is parts: a worker's partial sums of an owner's chunk
// (reduce-scatter), an owner's reduced chunk (for the coordinator) and its
// updated chunk (for the workers). The exact reduction (Replica) decides
// what parts go to whom and checks, places and adds what arrives; a
// transport only carries them (DESIGN §6). Three do: the peer data plane's
// direct connections (*Peers), the job's NATS server (natsPlane), and an
// in-memory one with injected faults for tests. A GPU collective library
// would be a fourth (docs/cluster.md, "Another transport").

// part is one message of a step's exchange: its kind (frameRS, frameRF,
// frameAG, frameWG), the identity of the step and range it belongs to, and
// its encoded values (encodeInt64s, float32Bytes).
type part struct {
	kind byte
	md   meta
	data []byte
}

// receiver takes the parts a transport brings: deliver with the sender's
// name (the transport authenticated it; data is not kept past the call),
// refuse for a message the transport could not make a part of (counted
// and logged as a rejected message).
type receiver interface {
	deliver(from string, p part)
	refuse(kind, from string, err error)
}

// transport carries a job's parts between the replicas of a phase.
type transport interface {
	// send sends p to each replica named in to and returns those it could
	// not reach (the caller sends them another way, or fails the step).
	// It returns when p.data may be reused.
	send(to []string, p part) (unreached []string)
	// attach hands every part that arrives from now on to rcv; detach
	// stops that, if rcv is still the one attached.
	attach(rcv receiver)
	detach(rcv receiver)
}

// sinkBox holds a transport's receiver for atomic swaps.
type sinkBox struct{ rcv receiver }

// sink is the receiver slot of a transport whose receivers change
// between phases.
type sink struct{ p atomic.Pointer[sinkBox] }

func (s *sink) attach(rcv receiver) { s.p.Store(&sinkBox{rcv}) }

func (s *sink) detach(rcv receiver) {
	if b := s.p.Load(); b != nil && b.rcv == rcv {
		s.p.CompareAndSwap(b, nil)
	}
}

func (s *sink) get() receiver {
	if b := s.p.Load(); b != nil {
		return b.rcv
	}
	return nil
}

// subjectKinds are the data subjects' last tokens by part kind.
var subjectKinds = map[byte]string{frameRS: "rs", frameAG: "ag", frameWG: "wg", frameRF: "rf"}

// natsPlane is the transport through the job's NATS server: a part is a
// signed message under the sender's subjects (lathe.J.w.W.rs.O or .rf.O
// to owner O; lathe.J.w.W.ag and .wg once for every reader), and reaches every
// replica that listens — it never reports one unreached.
type natsPlane struct {
	l      link
	prefix string // the sender's lathe.<job>.w.<name>
	log    hclog.Logger
	sink
}

func (t *natsPlane) send(to []string, p part) []string {
	h := p.md.header()
	if isPartial(p.kind) {
		for _, o := range to {
			t.publish(t.prefix+"."+subjectKinds[p.kind]+"."+o, h, p.data)
		}
		return nil
	}
	t.publish(t.prefix+"."+subjectKinds[p.kind], h, p.data)
	return nil
}

func (t *natsPlane) publish(subject string, h nats.Header, data []byte) {
	// Core NATS delivers at most once: a message lost here is asked for
	// again by its receiver (ResendAfter).
	if err := t.l.publish(subject, h, data); err != nil {
		t.log.Warn("publish failed", "subject", subject, "error", err)
	}
}

// onMsg makes a part of a data message: its signature and headers checked,
// its kind and sender from its subject.
func (t *natsPlane) onMsg(m *nats.Msg) {
	rcv := t.get()
	if rcv == nil {
		return
	}
	from := subjectFrom(m.Subject)
	kind := frameKinds[subjectKind(m.Subject)]
	if err := t.l.check(m); err != nil {
		rcv.refuse(partKind(isPartial(kind)), from, err)
		return
	}
	md, err := parseMeta(m.Header)
	if err != nil {
		rcv.refuse(partKind(isPartial(kind)), from, err)
		return
	}
	rcv.deliver(from, part{kind: kind, md: md, data: m.Data})
}
