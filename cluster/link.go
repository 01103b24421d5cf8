package cluster

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Every message of a job — registrations, heartbeats, control, data parts,
// requests and their answers — carries, when the job has a secret, an
// HMAC-SHA256 keyed by that secret of its subject, headers and body
// (header Lathe-Mac; not the reply subject, which the client picks for a
// request after it is signed — whoever holds the NATS credential may read
// any subject anyway: the MAC is for authenticity, not secrecy), and a sequence number its sender never
// repeats (Lathe-Seq: nanoseconds since 1970 at the sender's start, then
// one up per message), so that a copy replayed later is told from the
// original where order matters (control messages, heartbeats). A message
// without a valid MAC is refused before anything in it is read. Without a
// secret nothing is signed and nothing is checked (an embedded job always
// has one: the coordinator makes it).
const (
	hMAC = "Lathe-Mac"
	hSeq = "Lathe-Seq"
)

// ErrBadMessage wraps every message refused for its signature.
var ErrBadMessage = errors.New("cluster: message signature")

// link is a NATS connection that signs what it sends and checks what it
// receives with the job's secret (none: neither). Safe for concurrent use.
type link struct {
	nc     *nats.Conn
	secret []byte
	macs   *sync.Pool // of hash.Hash (HMAC-SHA256 under secret)
	seq    *atomic.Int64
}

func newLink(nc *nats.Conn, secret []byte) link {
	l := link{nc: nc, secret: slices.Clone(secret), seq: new(atomic.Int64)}
	l.seq.Store(time.Now().UnixNano())
	key := l.secret
	l.macs = &sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}
	return l
}

// mac is the MAC of m's subject, headers (but the MAC) and body.
func (l link) mac(m *nats.Msg) string {
	h := l.macs.Get().(hash.Hash)
	defer l.macs.Put(h)
	h.Reset()
	var sep = []byte{0}
	h.Write([]byte(m.Subject))
	h.Write(sep)
	keys := make([]string, 0, len(m.Header))
	for k := range m.Header {
		if k != hMAC {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		h.Write([]byte(k))
		for _, v := range m.Header[k] {
			h.Write(sep)
			h.Write([]byte(v))
		}
		h.Write([]byte{1})
	}
	h.Write(sep)
	h.Write(m.Data)
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0]))
}

// sign gives m a sequence number and, with a secret, its MAC.
func (l link) sign(m *nats.Msg) *nats.Msg {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	m.Header.Set(hSeq, strconv.FormatInt(l.seq.Add(1), 10))
	if len(l.secret) > 0 {
		m.Header.Set(hMAC, l.mac(m))
	}
	return m
}

// check verifies m's MAC: with a secret it must carry the right one;
// without, none (a signed job needs its secret).
func (l link) check(m *nats.Msg) error {
	got := m.Header.Get(hMAC)
	switch {
	case len(l.secret) == 0 && got != "":
		return fmt.Errorf("%w: the message is signed with a job secret, and this side was given none (--job-secret-file or $LATHE_JOB_SECRET)", ErrBadMessage)
	case len(l.secret) == 0:
		return nil
	case got == "":
		return fmt.Errorf("%w: the message is not signed, and this job's messages must be (its sender lacks the job's secret)", ErrBadMessage)
	case !hmac.Equal([]byte(got), []byte(l.mac(m))):
		return fmt.Errorf("%w: the signature does not match this job's secret", ErrBadMessage)
	}
	return nil
}

// seqOf is m's sequence number (0: none).
func seqOf(m *nats.Msg) int64 {
	s, _ := strconv.ParseInt(m.Header.Get(hSeq), 10, 64)
	return s
}

func (l link) publish(subject string, h nats.Header, data []byte) error {
	return l.nc.PublishMsg(l.sign(&nats.Msg{Subject: subject, Header: h, Data: data}))
}

func (l link) publishRequest(subject, reply string, data []byte) error {
	return l.nc.PublishMsg(l.sign(&nats.Msg{Subject: subject, Reply: reply, Data: data}))
}

// respond answers the request m.
func (l link) respond(m *nats.Msg, h nats.Header, data []byte) error {
	if m.Reply == "" {
		return nats.ErrMsgNoReply
	}
	return l.publish(m.Reply, h, data)
}

// request sends data to subject and returns the checked answer.
func (l link) request(ctx context.Context, subject string, data []byte) (*nats.Msg, error) {
	m, err := l.nc.RequestMsgWithContext(ctx, l.sign(&nats.Msg{Subject: subject, Data: data}))
	if err != nil {
		return nil, err
	}
	if err := l.check(m); err != nil {
		return nil, err
	}
	return m, nil
}

// seqs remembers the newest sequence number seen from each sender, to
// refuse a replayed message (r.mu of its owner, or its own lock).
type seqs struct {
	mu   sync.Mutex
	last map[string]int64
}

// fresh records m's sequence number from sender and says whether it is
// newer than any before.
func (s *seqs) fresh(sender string, m *nats.Msg) bool {
	if !s.newer(sender, m) {
		return false
	}
	s.record(sender, m)
	return true
}

// newer says whether m's sequence number from sender is newer than any
// recorded, recording nothing: a message is checked whole (signature,
// body, kind) before record, so that one refused cannot move the window
// and make its sender's next genuine messages look replayed.
func (s *seqs) newer(sender string, m *nats.Msg) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return seqOf(m) > s.last[sender]
}

// record notes m's sequence number from sender (the newest wins).
func (s *seqs) record(sender string, m *nats.Msg) {
	n := seqOf(m)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		s.last = map[string]int64{}
	}
	if n <= s.last[sender] {
		return
	}
	if len(s.last) >= maxSenders {
		clear(s.last) // bounded; a sender forgotten accepts its next message again
	}
	s.last[sender] = n
}

// maxSenders bounds the senders whose sequence numbers are remembered.
const maxSenders = 4096

// Sign signs m as a sender holding secret does: for a client of a job's
// subjects that is not a lathe process (a tool, a test). A sequence
// number m already carries is kept — a copy re-signed is still that copy,
// and is refused as a replay where order matters — else m is numbered.
func Sign(m *nats.Msg, secret []byte) *nats.Msg {
	l := newLink(nil, secret)
	if m.Header == nil || m.Header.Get(hSeq) == "" {
		return l.sign(m)
	}
	if len(l.secret) > 0 {
		m.Header.Set(hMAC, l.mac(m))
	}
	return m
}

// requestMsg sends data with headers h to subject and returns the checked
// answer.
func (l link) requestMsg(ctx context.Context, subject string, h nats.Header, data []byte) (*nats.Msg, error) {
	m, err := l.nc.RequestMsgWithContext(ctx, l.sign(&nats.Msg{Subject: subject, Header: h, Data: data}))
	if err != nil {
		return nil, err
	}
	if err := l.check(m); err != nil {
		return nil, err
	}
	return m, nil
}
