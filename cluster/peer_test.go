package cluster

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/lathe-ml/lathe/trainer"
)

// peerJob is one phase's replicas — the members and the coordinator —
// each with its own end of the peer data plane, and its NATS connection.
type peerJob struct {
	reps  map[string]*Replica
	peers map[string]*Peers
	names []string
}

// newPeerJob starts the replicas of members and the coordinator on plane;
// wrap, when set, wraps the connections name dials.
func newPeerJob(t *testing.T, conn func(string) *nats.Conn, secret []byte, members []string, shards int, plane string, wrap func(name string, c net.Conn) net.Conn) *peerJob {
	t.Helper()
	j := &peerJob{reps: map[string]*Replica{}, peers: map[string]*Peers{}, names: append(slices.Clone(members), coordinatorName)}
	addrs := map[string]string{}
	for _, name := range j.names {
		p, err := ListenPeers("job", name, secret, PeerConfig{Listen: "127.0.0.1:0"}, "", testLog(t, name+".peers"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		if wrap != nil {
			dial := p.dial
			p.dial = func(a string) (net.Conn, error) {
				c, err := dial(a)
				if err != nil {
					return nil, err
				}
				return wrap(name, c), nil
			}
		}
		j.peers[name], addrs[name] = p, p.Addr()
	}
	for _, name := range j.names {
		j.peers[name].SetAddrs(addrs)
		r, err := NewReplica(conn(name), secret, "job", name, 1, shards, 1, members, testLog(t, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		if plane != PlaneNATS { // as a worker does: no direct transport
			r.useDirect(j.peers[name], plane)
		}
		j.reps[name] = r
	}
	return j
}

// run reduces steps [0, steps) on every replica at once and checks each
// step's vector is want.
func (j *peerJob) run(t *testing.T, steps int64, want []float32, add func([]int, []int64) error) {
	t.Helper()
	j.each(t, func(ctx context.Context, name string, r *Replica) error {
		a := add
		if name == coordinatorName {
			a = nil
		}
		return reduceSteps(ctx, r, name, 0, steps, want, a)
	})
}

// each runs fn on every replica at once and fails on the first error.
func (j *peerJob) each(t *testing.T, fn func(ctx context.Context, name string, r *Replica) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(j.names))
	for _, name := range j.names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx, name, j.reps[name]); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestPeerReductionIsExact reduces steps among three workers and the
// coordinator over the peer data plane: every replica gets the exact sum,
// and no data message goes through NATS.
func TestPeerReductionIsExact(t *testing.T) {
	_, conn := embedded(t)
	const n, shards = 5000, 6
	want := exactSum(n, shards)
	j := newPeerJob(t, conn, []byte("job secret"), []string{"a", "b", "c"}, shards, PlaneAuto, nil)
	j.run(t, 5, want, shardAdder(0))
	for _, name := range j.names {
		st := j.reps[name].Stats()
		if name != coordinatorName && st.PeerBytesSent == 0 {
			t.Errorf("%s sent nothing over its peer connections", name)
		}
		if st.BrokerBytesSent != 0 || st.MessagesRejected != 0 {
			t.Errorf("%s: %d data bytes through NATS, %d messages rejected; want none", name, st.BrokerBytesSent, st.MessagesRejected)
		}
	}
}

// cutConn fails its writes once limit bytes have passed, closing the
// connection mid-frame (the receiver sees a frame cut short).
type cutConn struct {
	net.Conn
	left *atomic.Int64
}

func (c cutConn) Write(b []byte) (int, error) {
	if c.left.Add(-int64(len(b))) < 0 {
		c.Conn.Close()
		return 0, errors.New("connection cut")
	}
	return c.Conn.Write(b)
}

// TestPeerConnectionCutMidStep cuts a worker's connections in the middle
// of frames, step after step: its data goes through NATS (and over the
// connections dialled again), and every step still reduces exactly.
func TestPeerConnectionCutMidStep(t *testing.T) {
	_, conn := embedded(t)
	const n, shards = 20000, 4
	want := exactSum(n, shards)
	var cuts atomic.Int64
	j := newPeerJob(t, conn, []byte("job secret"), []string{"a", "b"}, shards, PlaneAuto, func(name string, c net.Conn) net.Conn {
		if name != "a" {
			return c
		}
		cuts.Add(1)
		left := new(atomic.Int64)
		left.Store(30000) // a part of the first partial frame (≥ 50 kB)
		return cutConn{c, left}
	})
	old := PeerRetryAfter
	PeerRetryAfter = 0 // dial again at once: cut again every step
	defer func() { PeerRetryAfter = old }()
	j.run(t, 4, want, shardAdder(0))
	if b := j.peers["a"].Broken(); b < 4 {
		t.Fatalf("%d connections of a broke, want one per step at least", b)
	}
	if st := j.reps["a"].Stats(); st.BrokerBytesSent == 0 {
		t.Fatal("a's frames that did not pass did not go through NATS")
	}
}

// slowConn writes in small pieces with a pause before each.
type slowConn struct{ net.Conn }

func (c slowConn) Write(b []byte) (int, error) {
	for off := 0; off < len(b); off += 16 << 10 {
		time.Sleep(2 * time.Millisecond)
		if _, err := c.Conn.Write(b[off:min(off+16<<10, len(b))]); err != nil {
			return off, err
		}
	}
	return len(b), nil
}

// TestSlowPeerStillReducesExactly slows one worker's connections: the
// others wait for it, and every step reduces exactly.
func TestSlowPeerStillReducesExactly(t *testing.T) {
	_, conn := embedded(t)
	const n, shards = 20000, 4
	want := exactSum(n, shards)
	j := newPeerJob(t, conn, []byte("job secret"), []string{"a", "b"}, shards, PlanePeer, func(name string, c net.Conn) net.Conn {
		if name == "b" {
			return slowConn{c}
		}
		return c
	})
	j.run(t, 3, want, shardAdder(0))
	if st := j.reps["b"].Stats(); st.BrokerBytesSent != 0 || st.PeerBytesSent == 0 {
		t.Fatalf("the slow peer sent %d bytes through NATS and %d over its connections", st.BrokerBytesSent, st.PeerBytesSent)
	}
}

// TestPeerWithAWrongSecretIsRefused dials, and is dialled by, a peer that
// holds another secret: neither end takes a frame from the other, both
// count the refusal, and the sender is told the peer was not reached.
func TestPeerWithAWrongSecretIsRefused(t *testing.T) {
	mine, err := ListenPeers("job", "a", []byte("job secret"), PeerConfig{Listen: "127.0.0.1:0"}, "", testLog(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	theirs, err := ListenPeers("job", "b", []byte("another secret"), PeerConfig{Listen: "127.0.0.1:0"}, "", testLog(t, "b"))
	if err != nil {
		t.Fatal(err)
	}
	defer theirs.Close()
	mine.SetAddrs(map[string]string{"b": theirs.Addr()})
	theirs.SetAddrs(map[string]string{"a": mine.Addr()})
	md := meta{job: "job", phase: 1, gen: 1, n: 4}
	if rest := mine.send([]string{"b"}, part{frameWG, md, encodeFloat32s(nil, make([]float32, 4))}); !slices.Equal(rest, []string{"b"}) {
		t.Fatalf("a frame reached a peer with another secret (not reached: %v)", rest)
	}
	if rest := theirs.send([]string{"a"}, part{frameWG, md, encodeFloat32s(nil, make([]float32, 4))}); !slices.Equal(rest, []string{"a"}) {
		t.Fatalf("a peer with another secret got a frame through (not reached: %v)", rest)
	}
	// Each end refused the other's proof once: the dialler checks the
	// listener's first.
	if mine.Refused() != 1 || theirs.Refused() != 1 {
		t.Fatalf("refusals: %d and %d, want 1 and 1", mine.Refused(), theirs.Refused())
	}
	// A peer reached under another name is refused too.
	mine.SetAddrs(map[string]string{"c": theirs.Addr()})
	if _, err := mine.conn("c"); err == nil || !errors.Is(err, ErrPeerRefused) {
		t.Fatalf("dialling c at b's address: %v, want a refusal", err)
	}
}

// TestPeerOnlyPlaneFailsWithoutAPeer runs a step on PlanePeer with a
// member whose address leads nowhere: the step fails, saying why.
func TestPeerOnlyPlaneFailsWithoutAPeer(t *testing.T) {
	_, conn := embedded(t)
	j := newPeerJob(t, conn, []byte("job secret"), []string{"a", "b"}, 2, PlanePeer, nil)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	j.peers["a"].SetAddrs(map[string]string{"b": dead})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := reduce(ctx, j.reps["a"], 0, 100, shardAdder(0))
	if err == nil || !strings.Contains(err.Error(), "cannot be reached") || !strings.Contains(err.Error(), PlanePeer) {
		t.Fatalf("got %v, want a step failing for the unreachable peer", err)
	}
}

// TestForgedFramesAreRefused sends frames over an authenticated
// connection that a replica must refuse (another phase, a stale step, a
// NaN, a chunk of the wrong kind, float32 partials no fixed-point integer
// holds), and bytes that are no frame at all.
func TestForgedFramesAreRefused(t *testing.T) {
	_, conn := embedded(t)
	secret := []byte("job secret")
	j := newPeerJob(t, conn, secret, []string{"a", "b"}, 2, PlaneAuto, nil)
	forger, err := ListenPeers("job", "b", secret, PeerConfig{Listen: "127.0.0.1:0"}, "", testLog(t, "forger"))
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	forger.SetAddrs(map[string]string{"a": j.peers["a"].Addr()})
	const n = 100
	nan := encodeFloat32s(nil, []float32{float32(nanValue())})
	for _, f := range []struct {
		kind byte
		md   meta
		data []byte
	}{
		{frameWG, meta{job: "job", phase: 2, gen: 1, n: n}, encodeFloat32s(nil, make([]float32, 10))},
		{frameWG, meta{job: "job", phase: 1, gen: 1, step: 99, n: n}, encodeFloat32s(nil, make([]float32, 10))},
		{frameWG, meta{job: "job", phase: 1, gen: 1, off: 50, n: n}, nan},
		{frameAG, meta{job: "job", phase: 1, gen: 1, off: 50, n: n}, encodeFloat32s(nil, make([]float32, 10))},
		// One micro-shard's partials of a's chunk: a NaN, and a finite
		// value no fixed-point integer holds.
		{frameRF, meta{job: "job", phase: 1, gen: 1, off: 0, n: n}, nan},
		{frameRF, meta{job: "job", phase: 1, gen: 1, off: 10, n: n}, encodeFloat32s(nil, []float32{1, trainer.FixedLimit})},
	} {
		if rest := forger.send([]string{"a"}, part{f.kind, f.md, f.data}); len(rest) > 0 {
			t.Fatal("the forger did not connect")
		}
	}
	// Not a frame: an unknown kind ends the connection.
	o, _ := forger.conn("a")
	var junk [frameHead]byte
	binary.LittleEndian.PutUint32(junk[:], frameHead-4)
	junk[4] = 9
	_, _ = o.c.Write(junk[:])
	// A stranger that does not speak the protocol.
	c, err := net.Dial("tcp", j.peers["a"].Addr())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for j.reps["a"].Stats().MessagesRejected < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// The forgeries change nothing: the step reduces exactly. (The part
	// with a NaN, sized for a vector not running yet, was held and is
	// refused when the step starts.)
	j.run(t, 1, exactSum(n, 2), shardAdder(0))
	if got := j.reps["a"].Stats().MessagesRejected; got != 6 {
		t.Fatalf("%d frames rejected, want 6", got)
	}
}

// TestPeerTLSReductionIsExact reduces steps among two workers and the
// coordinator with every dialled connection encrypted: the exact sum, and
// every connection each listener took was TLS (a first byte of 22, then a
// TLS 1.3 session the proofs are bound to).
func TestPeerTLSReductionIsExact(t *testing.T) {
	_, conn := embedded(t)
	const n, shards = 3000, 4
	var plain atomic.Int64
	j := newPeerJob(t, conn, []byte("job secret"), []string{"a", "b"}, shards, PlanePeer, func(name string, c net.Conn) net.Conn {
		return &firstByteConn{Conn: c, plain: &plain}
	})
	for _, p := range j.peers {
		p.SetTLS(true)
	}
	j.run(t, 3, exactSum(n, shards), shardAdder(0))
	var tlsIn int64
	for _, p := range j.peers {
		tlsIn += p.tlsIn.Load()
	}
	// a dials b and the coordinator, b dials a and the coordinator.
	if tlsIn != 4 || plain.Load() != 0 {
		t.Fatalf("%d TLS connections accepted, %d dialled without TLS; want 4 and 0", tlsIn, plain.Load())
	}
}

// firstByteConn counts connections whose first write is not a TLS record.
type firstByteConn struct {
	net.Conn
	plain *atomic.Int64
	seen  bool
}

func (c *firstByteConn) Write(b []byte) (int, error) {
	if !c.seen && len(b) > 0 {
		c.seen = true
		if b[0] != 22 {
			c.plain.Add(1)
		}
	}
	return c.Conn.Write(b)
}

// TestPeerTLSRelayIsRefused puts a relay between a and b that holds no
// secret but terminates TLS on both sides and passes the bytes within:
// every proof it forwards is bound to the other session, so both ends
// refuse it and no frame passes.
func TestPeerTLSRelayIsRefused(t *testing.T) {
	secret := []byte("job secret")
	a, err := ListenPeers("job", "a", secret, PeerConfig{Listen: "127.0.0.1:0"}, "", testLog(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := ListenPeers("job", "b", secret, PeerConfig{Listen: "127.0.0.1:0"}, "", testLog(t, "b"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// The relay: its own certificate towards a, a TLS client towards b.
	relayCert, err := (&Peers{name: "relay"}).serverTLS()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				in := tls.Server(c, relayCert)
				raw, err := net.Dial("tcp", b.Addr())
				if err != nil {
					return
				}
				out := tls.Client(raw, clientTLS)
				defer out.Close()
				go io.Copy(out, in)
				io.Copy(in, out)
			}()
		}
	}()
	a.SetTLS(true)
	a.SetAddrs(map[string]string{"b": ln.Addr().String()})
	md := meta{job: "job", phase: 1, gen: 1, n: 4}
	if rest := a.send([]string{"b"}, part{frameWG, md, encodeFloat32s(nil, make([]float32, 4))}); !slices.Equal(rest, []string{"b"}) {
		t.Fatalf("a frame passed the relay (not reached: %v)", rest)
	}
	if a.Refused() != 1 {
		t.Fatalf("a refused %d proofs, want the relayed listener's", a.Refused())
	}
	// Without the relay the same two connect.
	a.SetAddrs(map[string]string{"b": b.Addr()})
	time.Sleep(10 * time.Millisecond)
	a.mu.Lock()
	delete(a.down, "b")
	a.mu.Unlock()
	if rest := a.send([]string{"b"}, part{frameWG, md, encodeFloat32s(nil, make([]float32, 4))}); len(rest) != 0 {
		t.Fatalf("a could not reach b directly: %v", rest)
	}
}

// TestOwnersUpdateTheirChunksPartByPart runs steps whose owners update
// their chunks (a stand-in update, 2v+1) with parts of 97 elements, over
// the peer plane and through NATS: each owner's update is given its chunk
// once, part by part in order — or whole when the step asks — and every
// worker gathers the updated vector exactly; the coordinator, which
// reduces, the plain sum.
func TestOwnersUpdateTheirChunksPartByPart(t *testing.T) {
	defer func(old int) { PartElems = old }(PartElems)
	PartElems = 97
	const n, shards = 5000, 6
	sum := exactSum(n, shards)
	updated := make([]float32, n)
	for i, v := range sum {
		updated[i] = 2*v + 1
	}
	members := []string{"a", "b", "c"}
	for _, plane := range []string{PlaneAuto, PlaneNATS} {
		for _, whole := range []bool{false, true} {
			_, conn := embedded(t) // a server each: the jobs share names
			j := newPeerJob(t, conn, []byte("job secret"), members, shards, plane, nil)
			j.each(t, func(ctx context.Context, name string, r *Replica) error {
				if err := ownerSteps(ctx, r, name, n, whole, sum, updated); err != nil {
					return fmt.Errorf("plane %s, whole %v: %w", plane, whole, err)
				}
				return nil
			})
		}
	}
}

// ownerSteps runs three steps as the replica name (the coordinator
// computes nothing and updates nothing) and checks its update's parts and
// the vector it ends with.
func ownerSteps(ctx context.Context, r *Replica, name string, n int, whole bool, sum, updated []float32) error {
	for s := range int64(3) {
		var parts [][2]int
		var chunk [2]int
		f := trainer.Step{WholeUpdate: whole, Compute: func(ks []int, into []int64, fresh bool, _ *trainer.Finishing) error {
			if fresh {
				clear(into)
			}
			return shardAdder(0)(ks, into)
		}}
		if name != coordinatorName {
			f.Update = func(_ context.Context, lo, hi int) (func(int, []float32, []float32) error, error) {
				chunk = [2]int{lo, hi}
				return func(at int, grad, into []float32) error {
					parts = append(parts, [2]int{at, at + len(grad)})
					for i := range grad {
						into[i] = 2*grad[i] + 1
					}
					return nil
				}, nil
			}
		}
		v, upd, err := r.Reduce(ctx, s, n, f)
		if err != nil {
			return err
		}
		want := sum
		if name != coordinatorName {
			want = updated
		}
		if upd != (name != coordinatorName) || !slices.Equal(v, want) {
			return fmt.Errorf("%s: step %d: updated %v, a different vector", name, s, upd)
		}
		if name == coordinatorName {
			continue
		}
		// The parts tile the chunk in order, each at most PartElems (one
		// part, the chunk, when whole).
		at := chunk[0]
		for _, p := range parts {
			if p[0] != at || p[1] <= p[0] || !whole && p[1]-p[0] > PartElems {
				return fmt.Errorf("%s: step %d: parts %v of the chunk %v", name, s, parts, chunk)
			}
			at = p[1]
		}
		if at != chunk[1] || whole && len(parts) != 1 || !whole && len(parts) < (chunk[1]-chunk[0])/PartElems {
			return fmt.Errorf("%s: step %d: parts %v of the chunk %v", name, s, parts, chunk)
		}
	}
	return nil
}
