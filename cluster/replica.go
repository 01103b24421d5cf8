package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"

	"github.com/lathe-ml/lathe/internal/proc"
	"github.com/lathe-ml/lathe/trainer"
)

// ResendAfter is how long a replica waits for a missing message before it
// asks its sender to publish it again (core NATS delivers at most once).
var ResendAfter = 2 * time.Second

// Window is how many steps a worker may run ahead of the coordinator,
// whose replica keeps the state and writes the checkpoints: messages up to
// that many steps ahead are kept, and a worker waits before it starts a
// step further ahead.
var Window int64 = 32

// Stats counts a replica's traffic and the messages it refused.
type Stats struct {
	Steps            int64 `json:"steps"`
	BytesSent        int64 `json:"bytes_sent"`
	BytesReceived    int64 `json:"bytes_received"`
	MessagesRejected int64 `json:"messages_rejected"`
	Resends          int64 `json:"resends"`
	// PeerBytesSent are the data bytes sent over peer connections (one
	// count per receiver), BrokerBytesSent those published through NATS
	// (one count per message, whatever its receivers); BytesSent is both.
	PeerBytesSent   int64 `json:"peer_bytes_sent"`
	BrokerBytesSent int64 `json:"broker_bytes_sent"`
	// NATSBytesOut is everything the replica's NATS connection published
	// since the replica started (data, heartbeats, requests: the bytes it
	// put through the server; shared with whatever else uses it).
	NATSBytesOut int64 `json:"nats_bytes_out"`
	Redone       int64 `json:"steps_redone"` // steps computed again after a membership change
	Shards       int64 `json:"shards"`       // micro-shards computed
	// StateServed counts the chunks' optimizer states the coordinator
	// sent workers that took a chunk over.
	StateServed int64 `json:"optimizer_states_served"`
	// ComputeSeconds is the time spent computing them (the parts sent
	// while the trainer computes are the exchange's time, not this).
	ComputeSeconds float64 `json:"compute_seconds"`
	// StepSeconds is the time spent in steps (Reduce), WaitSeconds the
	// part of it spent waiting on other replicas — their partials and
	// chunks, or a coordinator Window/2 steps behind; what is neither
	// compute nor waiting is the exchange's own work (encoding, sums, the
	// chunk's update, sending).
	StepSeconds float64 `json:"step_seconds"`
	WaitSeconds float64 `json:"wait_seconds"`
	// CPUSeconds is the CPU time the process used during the steps, every
	// thread's (the peer connections' readers too): over StepSeconds, the
	// cores it kept busy.
	CPUSeconds float64 `json:"cpu_seconds"`
	// SteadySteps are the steps the replica completed after its first
	// SteadyFrom, and SteadySeconds the wall time from the completion of
	// the SteadyFrom-th to that of the last: the phase's pace once
	// started, as a timed loop after warm-up steps measures it (the
	// workers' start-up — connecting, loading the data — and the first
	// steps left out; anything else between those steps, an evaluation
	// at an epoch's end say, counted). SteadyFrom is SteadyAfter where
	// the replica completes steps one by one, and the first sync point at
	// or past it where a following coordinator takes them SyncEvery at a
	// time.
	SteadySteps   int64   `json:"steady_steps"`
	SteadySeconds float64 `json:"steady_seconds"`
	SteadyFrom    int64   `json:"steady_from"`
}

// SteadyAfter is how many of a phase's first steps Stats.SteadySteps
// leaves out: as many as the PyTorch DDP anchor runs before it times.
const SteadyAfter = 20

// key identifies one sender's vector for one step.
type key struct {
	from string
	gen  uint64
	step int64
}

// assembly gathers a vector's parts.
type assembly struct {
	lo, hi int // the range expected
	got    int // elements received
	parts  map[int]bool
	i64    []int64
	f32    []float32 // its range of the step's gathered vector (Replica.gathered), or float32 partials
	floats bool      // partials that came as one micro-shard's float32 values (frameRF)
}

// genStep names one generation's run of a step.
type genStep struct {
	gen  uint64
	step int64
}

func (a *assembly) complete() bool { return a.got == a.hi-a.lo }

// covers reports whether the assembly holds elements [lo, hi): whole, or
// in the parts of per elements a sender cuts its range in (Replica.parts)
// that overlap them.
func (a *assembly) covers(lo, hi, per int) bool {
	if a.complete() {
		return true
	}
	for off := a.lo + max(lo-a.lo, 0)/per*per; off < hi; off += per {
		if !a.parts[off] {
			return false
		}
	}
	return true
}

// Replica is one participant of a phase's data-parallel training: a worker
// that computes micro-shards and owns a chunk of the reduction, or the
// coordinator, which computes nothing and gathers the reduced vector to
// keep the state. It implements trainer.Parallel.
type Replica struct {
	nc     *nats.Conn
	l      link   // nc, signing and checking with the job's secret
	job    string // subject token
	name   string // subject token ("coordinator" for the coordinator)
	prefix string // lathe.<job>.w.<name> or lathe.<job>.c.coordinator
	gather string // the chunks it gathers: ag (reduced, the coordinator's) or wg (updated)
	phase  uint64
	shards int
	log    hclog.Logger

	mu      sync.Mutex
	gen     uint64           // the newest generation
	digests map[int64]string // own weight digests by step (the last DigestKeep)
	// Every generation's members, split of the micro-shards (nil: equal)
	// and first step: a step is run by the newest generation whose first
	// step it has reached (a worker joining mid-phase takes part from a
	// step boundary ahead).
	byGen    map[uint64][]string
	sharesOf map[uint64][]int
	fromOf   map[uint64]int64
	// The step each superseded generation was superseded at (its maps
	// are dropped a Window later).
	supersededAt map[uint64]int64
	failure      string // set with an empty membership: why the phase cannot go on
	fault        error  // this replica ran past a generation's first step before it heard of it
	joined       bool   // joined mid-phase: its first step's partials were sent before it listened
	joinAt       atomic.Int64
	joinable     atomic.Bool
	changed      chan struct{} // closed when the generation changes
	notify       chan struct{} // a message arrived
	curStep      int64
	partials     map[key]*assembly // reduce-scatter parts for our chunk
	chunks       map[key]*assembly // all-gather parts
	partial      *sent             // our last partial vector, for resends
	spare        *sent             // the one before, reused once no resend reads it
	free64       [][]int64         // buffers of finished steps' assemblies
	free32       [][]float32       // the same, of float32 partials
	// The step's own buffers (Reduce's goroutine): a piece's sums where
	// float32 partials come in, and a piece of the replica's segments.
	fold     [2][]int64
	piece    []float32
	freeFull [][]float32 // completed steps' vectors the trainer is done with
	// The vector each generation's run of a step gathers into: the chunks'
	// assemblies are its ranges, so a complete one is returned as it is.
	gathered map[genStep][]float32
	// Our reduced chunks of the steps the coordinator has not announced
	// complete (it may lag up to Window/2 steps, and ask for any of them
	// again), and of a step or two it has, whose buffers the next reuse.
	reduced      []*sent
	reducedSpare []float32 // the last one, when the coordinator follows
	// Our last updated chunk, for the workers' resends: our range of the
	// step's gathered vector, which the trainer takes — with the step's
	// vector, it is reused once the trainer is done with it (two steps
	// on; no replica asks for a chunk of a step two behind ours).
	updated *sent
	done    map[int64]doneStep
	// Requests for the optimizer state of a chunk (the coordinator's).
	momentReqs []momentsReq
	moments    func(lo, hi int) []float32 // the running step's (Step.Moments)
	momentsN   int
	// The transports: direct, the peer data plane's (nil: NATS only),
	// with its mode, and broker, the NATS server's (every part a direct
	// transport cannot deliver, requests and answers).
	direct transport
	plane  string
	broker *natsPlane
	// Parts this replica cannot place yet — of a generation not installed,
	// or sized for a vector it has not reached (a rebuilt model's, sent by
	// workers running ahead) — kept (at most holdLimit bytes) and offered
	// again when either changes.
	held      []heldPart
	heldBytes int
	n         int   // the length of the vector of step nStep (0: none yet)
	nStep     int64 // the step Reduce last ran
	subs      []*nats.Subscription
	stats     Stats
	stepStart time.Time     // when the step under way began (zero: none)
	stepCPU   time.Duration // the process's CPU time then
	natsOut0  uint64        // the connection's published bytes when the replica started
	completed int64         // steps completed in this replica's phase (redone ones again)
	steadyAt  time.Time     // when the Stats.SteadyFrom-th completed
	steps     atomic.Int64
	// The coordinator's completed steps, as it announces them (workers
	// wait when they get Window/2 steps ahead).
	coordSteps atomic.Int64
	coordMoved chan struct{}
	// A following phase's (sync.go): its spacing of sync points, the
	// snapshots' encoding, and on the coordinator the sync points' parts
	// and the step of the state it took last.
	syncEvery int
	codec     StateCodec
	syncs     map[int64]*syncPoint
	taken     int64
	// offers are a worker's sync points' parts, which sendOffers sends in
	// order while the worker trains on; offersStop ends it (Close).
	offers     chan offered
	offersStop context.CancelFunc
}

// doneStep is a completed step's vector, and whether it holds the
// updated parameters (a worker's) or the reduced gradients.
type doneStep struct {
	v       []float32
	updated bool
}

// heldPart is a part kept to place later, with its sender.
type heldPart struct {
	from string
	p    part
}

// sent is a vector a replica published, kept until the next step.
type sent struct {
	readers int // resends encoding from it (r.mu)
	gen     uint64
	step    int64
	n       int
	i64     []int64
	f32     []float32
	lo      int
	// A partial of one micro-shard (no i64): it is sent from segs (the
	// trainer's gradients, Step.Single's), nil once the trainer may
	// overwrite them.
	segs [][]float32
}

// single says a partial is one micro-shard's float32 values (segs), not
// fixed-point sums.
func (p *sent) single() bool { return p.i64 == nil }

var _ trainer.Parallel = (*Replica)(nil)

// NewReplica joins phase of job as name, with the given first generation.
func NewReplica(nc *nats.Conn, secret []byte, job, name string, phase uint64, shards int, gen uint64, members []string, log hclog.Logger) (*Replica, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	r := &Replica{nc: nc, l: newLink(nc, secret), job: Token(job), name: Token(name), phase: phase, shards: shards, log: log,
		gen: gen, byGen: map[uint64][]string{gen: slices.Clone(members)},
		sharesOf: map[uint64][]int{}, fromOf: map[uint64]int64{gen: 0}, supersededAt: map[uint64]int64{},
		changed: make(chan struct{}), notify: make(chan struct{}, 1),
		partials: map[key]*assembly{}, chunks: map[key]*assembly{}, gathered: map[genStep][]float32{},
		done: map[int64]doneStep{}, coordMoved: make(chan struct{}, 1)}
	r.joinAt.Store(-1)
	if nc != nil {
		r.natsOut0 = nc.Stats().OutBytes
	}
	r.nStep = -1
	r.prefix = "lathe." + r.job + ".w." + r.name
	if r.name == coordinatorName {
		r.prefix = "lathe." + r.job + ".c." + coordinatorName
	}
	base := "lathe." + r.job
	// The coordinator gathers the reduced gradients (it applies the whole
	// update itself and serves the optimizer state); a worker gathers the
	// chunks' owners' updated parameters.
	r.gather = "wg"
	if r.name == coordinatorName {
		r.gather = "ag"
	}
	r.broker = &natsPlane{l: r.l, prefix: r.prefix, log: log}
	r.broker.attach(r)
	handlers := []struct {
		subject string
		fn      nats.MsgHandler
	}{
		{base + ".w.*.rs." + r.name, r.broker.onMsg},
		{base + ".w.*.rf." + r.name, r.broker.onMsg},
		{base + ".w.*." + r.gather, r.broker.onMsg},
		{base + ".*.*.resend." + r.name, r.onResend},
		{base + ".*.*.fetch", r.onFetch},
		{base + ".c." + coordinatorName + ".at", r.onCoordinatorAt},
	}
	if r.name == coordinatorName {
		handlers = append(handlers, struct {
			subject string
			fn      nats.MsgHandler
		}{base + ".w.*.moments", r.onMoments})
	}
	for _, h := range handlers {
		sub, err := nc.Subscribe(h.subject, h.fn)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("cluster: subscribe %s: %w", h.subject, err)
		}
		// A replica busy computing reads late: never drop what it has not
		// read yet (the server's own limit still applies).
		_ = sub.SetPendingLimits(-1, -1)
		r.subs = append(r.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		r.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return r, nil
}

// Start sets the step the phase begins at (a resumed run's checkpoint
// step): messages are accepted from there, and the coordinator counts as
// having completed the steps before it — a worker would otherwise wait for
// it to catch up with steps nobody will run.
func (r *Replica) Start(step int64) {
	r.mu.Lock()
	r.curStep = max(r.curStep, step)
	r.taken = max(r.taken, step)
	r.mu.Unlock()
	if r.coordSteps.Load() < step {
		r.coordSteps.Store(step)
	}
}

// Close unsubscribes, and stops taking peers' frames.
func (r *Replica) Close() {
	r.mu.Lock()
	if r.offersStop != nil {
		r.offersStop()
	}
	r.mu.Unlock()
	if r.direct != nil {
		r.direct.detach(r)
	}
	r.broker.detach(r)
	for _, s := range r.subs {
		_ = s.Unsubscribe()
	}
	r.subs = nil
}

// MicroShards implements trainer.Parallel.
func (r *Replica) MicroShards() int { return r.shards }

// Stats returns the counters so far.
func (r *Replica) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Steps = r.steps.Load()
	if !r.stepStart.IsZero() {
		// The step under way counts so far: what it has computed and
		// waited is already in the other counts.
		s.StepSeconds += time.Since(r.stepStart).Seconds()
		s.CPUSeconds += (proc.CPUTime() - r.stepCPU).Seconds()
	}
	if r.nc != nil {
		s.NATSBytesOut = int64(r.nc.Stats().OutBytes - r.natsOut0)
	}
	return s
}

// carry continues the counts of old, the replica of the same phase this
// one replaces (a restart from the coordinator's state): a worker's figures
// — micro-shards computed, bytes, step time — are the phase's, not the
// restart's. Refused messages are not carried: the worker counts old's
// when it closes it.
func (r *Replica) carry(old *Replica) {
	st := old.Stats()
	old.mu.Lock()
	n0 := old.natsOut0
	old.mu.Unlock()
	st.Steps, st.NATSBytesOut, st.MessagesRejected = 0, 0, 0
	r.mu.Lock()
	r.stats, r.natsOut0 = st, n0
	r.mu.Unlock()
}

// DigestEvery is how often (in steps) replicas hash their weights, and
// DigestKeep how many of their own digests they keep for comparison (the
// workers run up to Window/2 steps ahead of the coordinator): those of
// the last DigestKeep·DigestEvery steps at least, and DigestKeep sync
// points' spacing in a following phase (which hashes at its sync points).
var (
	DigestEvery int64 = 25
	DigestKeep        = 8
)

// SetDigest records the digest of this replica's weights after step
// (1-based): a worker reports its newest in its heartbeats; the
// coordinator compares them with its own.
func (r *Replica) SetDigest(step int64, digest string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.digests == nil {
		r.digests = map[int64]string{}
	}
	r.digests[step] = digest
	for s := range r.digests {
		if s <= step-int64(DigestKeep)*max(DigestEvery, int64(r.syncEvery)) {
			delete(r.digests, s)
		}
	}
}

// digest returns the digest recorded after step, and the oldest step it
// still holds one for (−1: none).
func (r *Replica) digest(step int64) (d string, ok bool, oldest int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok = r.digests[step]
	oldest = -1
	for s := range r.digests {
		if oldest < 0 || s < oldest {
			oldest = s
		}
	}
	return d, ok, oldest
}

// lastDigest is the newest digest recorded.
func (r *Replica) lastDigest() (step int64, d string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for s, v := range r.digests {
		if s > step {
			step, d = s, v
		}
	}
	return step, d
}

// SetShares sets the current generation's split of the micro-shards among
// its members (nil: equal).
func (r *Replica) SetShares(shares []int) {
	r.mu.Lock()
	r.sharesOf[r.gen] = slices.Clone(shares)
	r.mu.Unlock()
}

// SetGen installs a membership generation (ignored unless newer) and its
// split of the micro-shards (nil: equal), for the steps from from on: 0
// for a change that applies at once (a worker lost, a re-split), a step
// ahead for a worker joining mid-phase, which receives the state at that
// step. An empty membership with a failure makes waiting steps fail with
// it.
func (r *Replica) SetGen(gen uint64, members []string, shares []int, failure string, from int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if gen <= r.gen {
		return
	}
	if from > 0 && r.steps.Load() > from && r.fault == nil {
		// The coordinator chose the first step beyond any a replica may
		// have started; this one got past it before hearing of it.
		r.fault = fmt.Errorf("cluster: generation %d starts at step %d, but this replica completed %d steps before it heard of it", gen, from+1, r.steps.Load())
	}
	// The generation superseded now may still have run steps up to
	// Window/2 beyond any replica's (the workers run ahead of the
	// coordinator), and its complete chunks reduce those steps to the same
	// bits as any other generation: it is kept until this replica is a
	// whole Window past the step it was superseded at. (Dropping it sooner
	// left a coordinator that lagged behind a re-split and a loss with
	// chunks it could no longer assemble, and nobody to resend them.)
	for g := range r.fromOf {
		if _, ok := r.supersededAt[g]; !ok {
			r.supersededAt[g] = r.curStep
		}
	}
	for g, at := range r.supersededAt {
		if at+Window < r.curStep {
			delete(r.fromOf, g)
			delete(r.byGen, g)
			delete(r.sharesOf, g)
			delete(r.supersededAt, g)
		}
	}
	r.gen, r.failure = gen, failure
	r.byGen[gen] = slices.Clone(members)
	r.sharesOf[gen] = slices.Clone(shares)
	r.fromOf[gen] = from
	close(r.changed)
	r.changed = make(chan struct{})
	r.replayLocked()
}

// holdLocked keeps a copy of a part to place later (r.mu held); false
// when the held parts would pass holdLimit (the sender resends what is
// refused).
func (r *Replica) holdLocked(from string, p part) bool {
	if r.heldBytes+len(p.data) > r.holdLimitLocked() {
		return false
	}
	p.data = slices.Clone(p.data)
	r.held = append(r.held, heldPart{from, p})
	r.heldBytes += len(p.data)
	return true
}

// holdLimitLocked bounds the bytes of held messages: room for every
// message of Window steps of the current vector, and 64 MiB besides.
func (r *Replica) holdLimitLocked() int {
	return 64<<20 + int(Window)*8*r.n
}

// replayLocked offers the held messages again, on another goroutine (r.mu
// held).
func (r *Replica) replayLocked() {
	held := r.held
	r.held, r.heldBytes = nil, 0
	if len(held) == 0 {
		return
	}
	go func() {
		for _, h := range held {
			r.deliver(h.from, h.p)
		}
	}()
}

// genForLocked is the generation that runs step: the newest whose first
// step it has reached (r.mu held).
func (r *Replica) genForLocked(step int64) uint64 {
	var best uint64
	for g, from := range r.fromOf {
		if from <= step && g > best {
			best = g
		}
	}
	return best
}

// view is the generation that runs step, its members, split and failure
// (the newest generation's, when it is that one), and the channel closed
// at the next change.
func (r *Replica) view(step int64) (uint64, []string, []int, string, chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.genForLocked(step)
	failure := ""
	if g == r.gen {
		failure = r.failure
	}
	return g, r.byGen[g], r.sharesOf[g], failure, r.changed
}

// Await waits for the value the coordinator publishes under key for this
// phase (Coordinator.Share), asking for it every AwaitEvery.
func (r *Replica) Await(ctx context.Context, key string) ([]byte, error) {
	req, _ := json.Marshal(sharedReq{Phase: r.phase, Key: key})
	for {
		m, err := r.l.request(ctx, r.prefix+".shared", req)
		if err == nil && len(m.Data) > 0 {
			return m.Data, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(AwaitEvery):
		}
	}
}

// AwaitEvery is how often a replica asks for a shared value it waits for.
var AwaitEvery = 200 * time.Millisecond

// Joinable marks the coordinator's replica as one whose trainer hands its
// state to workers joining mid-phase (trainer.Config.ShareState): the
// coordinator admits them during the phase, not only at the next.
func (r *Replica) Joinable() { r.joinable.Store(true) }

// JoinAt implements trainer.Joinable: the coordinator's trainer hands its
// state over before the step workers join at.
func (r *Replica) JoinAt(step int64) bool { return r.joinAt.Load() == step }

var errGenChanged = errors.New("cluster: membership changed")

func (r *Replica) onCoordinatorAt(m *nats.Msg) {
	if err := r.l.check(m); err != nil {
		r.reject("coordinator's step", coordinatorName, err)
		return
	}
	md, err := parseMeta(m.Header)
	if err != nil || md.job != r.job || md.phase != r.phase {
		return
	}
	if md.step > r.coordSteps.Load() {
		r.coordSteps.Store(md.step)
		select {
		case r.coordMoved <- struct{}{}:
		default:
		}
	}
}

// Reduce implements trainer.Parallel: a worker that owns a chunk of the
// step's vector updates it with f.Update and publishes both the reduced
// chunk (for the coordinator) and the updated one (for the workers), and
// returns the updated vector; the coordinator returns the reduced one, and
// serves the optimizer state of chunks (f.Moments) while it waits.
func (r *Replica) Reduce(ctx context.Context, step int64, n int, f trainer.Step) ([]float32, bool, error) {
	updated := r.name != coordinatorName && f.Update != nil
	r.mu.Lock()
	r.stepStart, r.stepCPU = time.Now(), proc.CPUTime()
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.stats.StepSeconds += time.Since(r.stepStart).Seconds()
		r.stats.CPUSeconds += (proc.CPUTime() - r.stepCPU).Seconds()
		r.stepStart = time.Time{}
		r.mu.Unlock()
	}()
	if r.name != coordinatorName {
		if err := r.awaitCoordinator(ctx, step); err != nil {
			return nil, false, err
		}
	}
	r.mu.Lock()
	r.curStep = step
	for k, a := range r.partials {
		if k.step < step {
			delete(r.partials, k)
			if a.floats {
				r.free32 = keep(r.free32, a.f32)
			} else {
				r.free64 = keep(r.free64, a.i64)
			}
		}
	}
	for k := range r.chunks {
		if k.step < step { // its values are the gathered vector's
			delete(r.chunks, k)
		}
	}
	for k, v := range r.gathered {
		if k.step < step { // a generation's run that did not complete the step
			delete(r.gathered, k)
			r.freeFull = keep(r.freeFull, v)
		}
	}
	if r.name == coordinatorName {
		r.moments, r.momentsN = f.Moments, n
	}
	r.nStep = step
	if n != r.n || len(r.held) > 0 {
		// Parts sized for this vector may have come while another ran;
		// those of steps now past are dropped (refused) on the way.
		r.n = n
		r.replayLocked()
	}
	if d, ok := r.done[step]; ok { // fetched while the step was being redone
		r.mu.Unlock()
		return d.v, d.updated, nil
	}
	r.mu.Unlock()
	r.serveMoments(step)
	first, gone := true, 0
	for {
		if err := r.faulted(); err != nil {
			return nil, false, err
		}
		gen, members, shares, failure, changed := r.view(step)
		if len(members) == 0 {
			if failure != "" {
				return nil, false, fmt.Errorf("cluster: %s", failure)
			}
			select {
			case <-ctx.Done():
				return nil, false, ctx.Err()
			case <-changed:
				continue
			}
		}
		// The step may be complete already under an earlier generation: the
		// workers ran ahead and reduced it before a member was lost. Every
		// generation reduces to the same bits, so that vector is the step's.
		r.mu.Lock()
		full := r.assembledLocked(step, n)
		if full == nil && !first {
			r.stats.Redone++
		}
		r.mu.Unlock()
		first = false
		var err error
		if full == nil {
			full, err = r.attempt(ctx, gen, members, shares, changed, step, n, f)
		}
		if errors.Is(err, errStepGone) {
			// The coordinator completed the step: its chunks are on their
			// way here, or with the replicas that completed it.
			if gone++; gone > maxGone {
				return nil, false, fmt.Errorf("cluster: step %d: completed elsewhere, but its chunks did not come", step+1)
			}
			err = errGenChanged
		}
		if errors.Is(err, errGenChanged) {
			// Someone may have completed the step already (its last chunk
			// was published before a worker was lost): take theirs, or
			// compute it again among those left. (The workers hold the
			// updated vectors, not the reduced ones the coordinator
			// gathers: it waits for the chunks of any generation.)
			if r.name == coordinatorName {
				continue
			}
			if v := r.fetch(step, n, updated); v != nil {
				full = v
				err = nil
			} else {
				continue
			}
		}
		if err != nil {
			return nil, false, err
		}
		r.dropSegs() // every owner has the step's partials: the trainer goes on
		r.mu.Lock()
		r.done[step] = doneStep{full, updated}
		if old, ok := r.done[step-2]; ok {
			// The trainer copied it out two steps ago: the next full
			// vector reuses it.
			r.freeFull = keep(r.freeFull, old.v)
			delete(r.done, step-2)
		}
		r.curStep = step + 1 // the step's messages are stale from now on
		r.paceLocked(1)
		r.mu.Unlock()
		r.steps.Store(step + 1)
		if r.name == coordinatorName {
			r.announce(step + 1)
		}
		return full, updated, nil
	}
}

// paceLocked counts done steps completed now towards Stats' steady pace
// (r.mu held). A following coordinator completes a sync interval's steps
// at once: the window starts at the completion that reaches SteadyAfter,
// and counts only the steps completed after that one.
func (r *Replica) paceLocked(done int64) {
	before := r.completed
	r.completed += done
	switch {
	case before < SteadyAfter && r.completed >= SteadyAfter:
		r.steadyAt, r.stats.SteadyFrom = time.Now(), r.completed
	case before >= SteadyAfter && done > 0:
		r.stats.SteadySteps = r.completed - r.stats.SteadyFrom
		r.stats.SteadySeconds = time.Since(r.steadyAt).Seconds()
	}
}

// attempt runs the step under one generation.
func (r *Replica) attempt(ctx context.Context, gen uint64, members []string, shares []int, changed chan struct{}, step int64, n int, f trainer.Step) ([]float32, error) {
	size := len(members)
	rank := slices.Index(members, r.name)
	if rank >= 0 {
		mine := plan(r.shards, shares, size, rank)
		lo, hi := chunk(n, size, rank)
		start := time.Now()
		r.dropSegs()
		var segs [][]float32
		if len(mine) == 1 && size > 1 && f.Single != nil {
			// One micro-shard: the trainer's float32 values, sent to the
			// others as they are and converted here as they are summed.
			var err error
			if segs, err = f.Single(mine[0]); err != nil {
				return nil, err
			}
		}
		p := &sent{gen: gen, step: step, n: n, segs: segs}
		var sc *scatter
		if segs == nil {
			// The others' ranges go out as the trainer finishes them, its
			// own chunk computed last: the exchange overlaps the sums.
			p.i64 = r.partialBuffer(n)
			sc = r.newScatter(p, members, rank)
			if err := f.Compute(mine, p.i64, true, sc.finishing()); err != nil {
				return nil, err
			}
		}
		took := time.Since(start)
		if sc != nil {
			took -= sc.sending
		}
		r.mu.Lock()
		r.stats.Shards += int64(len(mine))
		r.stats.ComputeSeconds += took.Seconds()
		r.spare, r.partial = r.partial, p
		r.mu.Unlock()
		if sc != nil {
			sc.flush()
		} else {
			for j, o := range members {
				if j != rank {
					r.sendPartial(o, p, j, size)
				}
			}
		}
		r.mu.Lock()
		joined := r.joined
		r.joined = false
		r.mu.Unlock()
		if joined {
			// Joined mid-phase: the others sent their partials of this step
			// before this replica listened. Ask for them now.
			for j, o := range members {
				if j != rank {
					r.askResend(o, resendReq{Kind: "rs", Gen: gen, Step: step, To: r.name})
				}
			}
		}
		// The update is prepared before any chunk goes out: it may need the
		// chunk's optimizer state from the coordinator, which serves it only
		// while it has not completed the step.
		var part func(int, []float32, []float32) error
		if f.Update != nil {
			var err error
			if part, err = f.Update(ctx, lo, hi); err != nil {
				return nil, err
			}
		}
		out, upd := r.chunkBuffers(gen, step, n, lo, hi, f.Update != nil)
		if err := r.reducePieces(ctx, gen, step, changed, members, rank, f.WholeUpdate, p, out, upd, part); err != nil {
			return nil, err
		}
		r.mu.Lock()
		if r.syncEvery > 0 {
			// A following coordinator takes no reduced chunks: the next
			// step's reuses it.
			r.reducedSpare = out
		} else {
			r.reduced = append(r.reduced, &sent{gen: gen, step: step, n: n, f32: out, lo: lo})
		}
		r.updated = &sent{gen: gen, step: step, n: n, f32: upd, lo: lo}
		own := r.gatheredLocked(gen, step, n)[lo:hi]
		if f.Update == nil {
			copy(own, upd) // upd is out, kept for the coordinator
		}
		r.chunks[key{r.name, gen, step}] = &assembly{lo: lo, hi: hi, got: hi - lo, f32: own}
		r.mu.Unlock()
	}
	var full []float32
	err := r.wait(ctx, step, gen, changed, func() (bool, []string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if full = r.assembledLocked(step, n); full != nil {
			return true, nil
		}
		var missing []string
		for _, o := range members {
			if a := r.chunks[key{o, gen, step}]; a == nil || !a.complete() {
				missing = append(missing, o)
			}
		}
		return false, missing
	}, func(o string) resendReq { return resendReq{Kind: r.gather, Gen: gen, Step: step, To: o} })
	if err != nil {
		return nil, err
	}
	return full, nil
}

// partialBuffer is a buffer for a step's partial sums: the one of the
// step before the last when no resend reads it (Compute puts its sum in
// place of the old one), or a new one.
func (r *Replica) partialBuffer(n int) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	sp := r.spare
	r.spare = nil
	if sp != nil && sp.readers == 0 && len(sp.i64) == n {
		return sp.i64
	}
	return make([]int64, n)
}

// chunkBuffers returns the buffers of a step's reduced chunk [lo, hi)
// (out) and, when the replica updates, of its updated one (upd): the
// replica's range of the vector the generation's run of the step gathers,
// which the update writes straight into (else out itself).
func (r *Replica) chunkBuffers(gen uint64, step int64, n, lo, hi int, updates bool) (out, upd []float32) {
	r.mu.Lock()
	if updates {
		out, upd = r.reuseReducedLocked(hi-lo), r.gatheredLocked(gen, step, n)[lo:hi]
	}
	r.mu.Unlock()
	if out == nil {
		out = make([]float32, hi-lo)
	}
	if !updates {
		upd = out
	}
	return out, upd
}

// reducePieces completes the replica's chunk of a step piece by piece, in
// the pieces an updated chunk's parts are cut in (the whole chunk when
// whole): as soon as every other member's partials of a piece are in, it
// sums them and the replica's own (mine) and converts the piece to out
// (sumPiece), updates it into upd with part (nil: upd is out), and sends
// both — the reduced piece first (to a coordinator that reduces: a
// replica that has a step's updated chunks knows the coordinator was sent
// its reduced ones), while the next pieces' partials still travel.
func (r *Replica) reducePieces(ctx context.Context, gen uint64, step int64, changed chan struct{}, members []string, rank int, whole bool, mine *sent, out, upd []float32, part func(int, []float32, []float32) error) error {
	n := mine.n
	lo, hi := chunk(n, len(members), rank)
	md := meta{job: r.job, phase: r.phase, gen: gen, step: step, n: n}
	others := slices.Delete(slices.Clone(members), rank, rank+1)
	per, each := r.partElems(8), r.partElems(4)
	if whole {
		each = max(hi-lo, 1)
	}
	for a := lo; ; a += each {
		b := min(a+each, hi)
		err := r.wait(ctx, step, gen, changed, func() (bool, []string) {
			r.mu.Lock()
			defer r.mu.Unlock()
			var missing []string
			for _, o := range others {
				if p := r.partials[key{o, gen, step}]; p == nil || !p.covers(a, b, per) {
					missing = append(missing, o)
				}
			}
			return len(missing) == 0, missing
		}, func(o string) resendReq { return resendReq{Kind: "rs", Gen: gen, Step: step, To: r.name} })
		if err != nil {
			return err
		}
		r.mu.Lock()
		var rest []*assembly
		for _, m := range others {
			p := r.partials[key{m, gen, step}]
			if p.lo != lo || p.hi != hi {
				r.mu.Unlock()
				return fmt.Errorf("cluster: step %d: %s sent range [%d, %d), want [%d, %d)", step+1, m, p.lo, p.hi, lo, hi)
			}
			rest = append(rest, p)
		}
		o, u := out[a-lo:b-lo], upd[a-lo:b-lo]
		err = r.sumPiece(mine, rest, a, b, lo, o) // under r.mu: theirs are the map's
		r.mu.Unlock()
		if err != nil {
			return fmt.Errorf("cluster: step %d: %w", step+1, err)
		}
		if part != nil {
			if err := part(a, o, u); err != nil {
				return err
			}
		}
		if r.syncEvery == 0 {
			r.sendFloat32s(frameAG, []string{coordinatorName}, md, a, o)
		}
		r.sendFloat32s(frameWG, others, md, a, u)
		if b == hi {
			return nil
		}
	}
}

// sumPiece sums the elements [a, b) of the replica's partial (mine) and
// the others' (rest, whose chunks start at lo) into o, converted to
// float32: exact integer sums, in place in mine's own range — never resent
// — or, where float32 values come in (one micro-shard's), in buffers of
// the piece's size after converting them, the last with the conversion in
// the same pass.
func (r *Replica) sumPiece(mine *sent, rest []*assembly, a, b, lo int, o []float32) error {
	var sum []int64
	if mine.single() {
		sum = grow64(&r.fold[0], b-a)
		if err := trainer.SetFixed(sum, segmentsRange(mine.segs, a, b, &r.piece)); err != nil {
			return err
		}
	} else {
		sum = mine.i64[a:b]
	}
	if len(rest) == 0 {
		for i, v := range sum {
			o[i] = trainer.FromFixed(v)
		}
		return nil
	}
	for k, p := range rest {
		last := k == len(rest)-1
		var theirs []int64
		switch {
		case p.floats && last:
			theirs = grow64(&r.fold[1], b-a)
			if err := trainer.SetFixed(theirs, p.f32[a-lo:b-lo]); err != nil {
				return err
			}
		case p.floats:
			if err := trainer.AddFixed(sum, p.f32[a-lo:b-lo]); err != nil {
				return err
			}
			continue
		default:
			theirs = p.i64[a-lo : b-lo]
		}
		if last {
			trainer.FromFixedAdd(o, sum, theirs)
			return nil
		}
		for i, v := range theirs {
			sum[i] += v
		}
	}
	return nil
}

// grow64 returns n elements of *buf's storage, growing it where short.
func grow64(buf *[]int64, n int) []int64 {
	if cap(*buf) < n {
		*buf = make([]int64, n)
	}
	return (*buf)[:n]
}

// assembledLocked returns step's reduced vector when every member of some
// generation has delivered its whole chunk of it, nil otherwise (r.mu
// held). The chunks' ranges were fixed on arrival from that generation's
// membership, so together they cover [0, n) exactly.
func (r *Replica) assembledLocked(step int64, n int) []float32 {
	gens := map[uint64]bool{}
	for k := range r.chunks {
		if k.step == step {
			gens[k.gen] = true
		}
	}
	for gen := range gens {
		members := r.byGen[gen]
		if len(members) == 0 {
			continue
		}
		complete := true
		for _, o := range members {
			if a := r.chunks[key{o, gen, step}]; a == nil || !a.complete() || len(a.f32) != a.hi-a.lo {
				complete = false
				break
			}
		}
		if !complete {
			continue
		}
		for j, o := range members {
			a := r.chunks[key{o, gen, step}]
			lo, hi := chunk(n, len(members), j)
			if a.lo != lo || a.hi != hi {
				complete = false
				break
			}
		}
		if !complete {
			continue
		}
		// Every chunk was placed in the generation's vector: it is the
		// step's, handed on (the assemblies go with the step).
		if full, ok := r.gathered[genStep{gen, step}]; ok && len(full) == n {
			delete(r.gathered, genStep{gen, step})
			return full
		}
		// Handed on before: a copy of its chunks.
		var full []float32
		full, r.freeFull = take(r.freeFull, n)
		for _, o := range members {
			a := r.chunks[key{o, gen, step}]
			copy(full[a.lo:a.hi], a.f32)
		}
		return full
	}
	return nil
}

// wait blocks until ready says so, asking the missing senders to publish
// again every ResendAfter; it gives up when another generation takes over
// step.
func (r *Replica) wait(ctx context.Context, step int64, gen uint64, changed chan struct{}, ready func() (bool, []string), req func(string) resendReq) error {
	defer r.waited(time.Now())
	t := time.NewTimer(ResendAfter)
	defer t.Stop()
	for {
		r.serveMoments(step)
		if err := r.faulted(); err != nil {
			return err
		}
		ok, missing := ready()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
			g, _, _, failure, ch := r.view(step)
			if g != gen || failure != "" {
				return errGenChanged
			}
			changed = ch // a generation for later steps: this one goes on
		case <-r.notify:
		case <-t.C:
			for _, o := range missing {
				r.askResend(o, req(o))
			}
			t.Reset(ResendAfter)
		}
	}
}

// awaitCoordinator holds a worker's step until the coordinator is at most
// Window/2 steps behind it — or, when it follows, Window/2 steps past the
// next sync point after the state it took last.
func (r *Replica) awaitCoordinator(ctx context.Context, step int64) error {
	ahead := Window/2 + int64(r.syncEvery)
	if step <= r.coordSteps.Load()+ahead {
		return nil
	}
	defer r.waited(time.Now())
	for step > r.coordSteps.Load()+ahead {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.coordMoved:
		case <-time.After(time.Second):
		}
	}
	return nil
}

// waited counts the time since start as waiting on other replicas.
func (r *Replica) waited(start time.Time) {
	r.mu.Lock()
	r.stats.WaitSeconds += time.Since(start).Seconds()
	r.mu.Unlock()
}

type resendReq struct {
	Kind string `json:"kind"` // rs: your partial for To; ag: your reduced chunk; wg: your updated chunk
	Gen  uint64 `json:"gen"`
	Step int64  `json:"step"`
	To   string `json:"to"`
}

func (r *Replica) askResend(from string, q resendReq) {
	r.mu.Lock()
	r.stats.Resends++
	r.mu.Unlock()
	b, _ := json.Marshal(q)
	r.log.Debug("asking for a message again", "from", from, "kind", q.Kind, "step", q.Step+1, "gen", q.Gen)
	// The answer comes as the message itself; the reply only says whether
	// the sender still had it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = r.l.request(ctx, r.prefix+".resend."+from, b)
}

func (r *Replica) onResend(m *nats.Msg) {
	var q resendReq
	if err := r.l.check(m); err != nil {
		r.reject("resend", subjectFrom(m.Subject), err)
		return
	}
	if err := json.Unmarshal(m.Data, &q); err != nil {
		r.reject("resend", subjectFrom(m.Subject), err)
		return
	}
	asker := subjectFrom(m.Subject)
	r.mu.Lock()
	p, c := r.partial, r.updated
	if q.Kind == "ag" {
		c = nil
		for _, v := range r.reduced {
			if v.gen == q.Gen && v.step == q.Step {
				c = v
			}
		}
	}
	// Not reused for a step's partials or chunks while encoded here.
	for _, v := range []*sent{p, c} {
		if v != nil {
			v.readers++
			defer func() {
				r.mu.Lock()
				v.readers--
				r.mu.Unlock()
			}()
		}
	}
	members := r.byGen[q.Gen]
	r.mu.Unlock()
	answer := "none"
	switch {
	case q.Kind == "rs" && p != nil && p.gen == q.Gen && p.step == q.Step && (!p.single() || p.segs != nil):
		if j := slices.Index(members, q.To); j >= 0 {
			r.sendPartial(q.To, p, j, len(members))
			answer = "ok"
		}
	case (q.Kind == "ag" || q.Kind == "wg") && c != nil && c.gen == q.Gen && c.step == q.Step:
		r.sendFloat32s(frameKinds[q.Kind], []string{asker}, meta{job: r.job, phase: r.phase, gen: c.gen, step: c.step, n: c.n}, c.lo, c.f32)
		answer = "ok"
	}
	_ = r.l.respond(m, nil, []byte(answer))
}

// fetch asks every replica for the whole vector of step — updated (a
// worker's) or reduced (the coordinator's); nil when no one has it within
// a second.
func (r *Replica) fetch(step int64, n int, updated bool) []float32 {
	inbox := nats.NewInbox()
	sub, err := r.nc.SubscribeSync(inbox)
	if err != nil {
		return nil
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)
	req, _ := json.Marshal(resendReq{Kind: fetchKind(updated), Step: step})
	if err := r.l.publishRequest(r.prefix+".fetch", inbox, req); err != nil {
		return nil
	}
	var parts vectorParts
	from := ""
	deadline := time.Now().Add(time.Second)
	for {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return nil
		}
		if err := r.l.check(m); err != nil {
			r.reject("step result", m.Header.Get("Lathe-From"), err)
			continue
		}
		md, err := parseMeta(m.Header)
		if err != nil || md.job != r.job || md.phase != r.phase || md.step != step || md.n != n {
			continue
		}
		if f := m.Header.Get("Lathe-From"); from == "" {
			from = f
		} else if f != from {
			continue
		}
		if done, err := parts.add(md, m.Data, n, n); err == nil && done {
			r.log.Info("took a step's result from another replica", "step", step+1, "from", from)
			return parts.v
		}
	}
}

// vectorParts assembles a vector sent in float32 parts to one inbox; a
// part sized for another vector starts over.
type vectorParts struct {
	v     []float32
	got   map[int]bool
	total int
}

// add places a part of a vector whose length the receiver bounds to
// [least, most] (a duplicate, or a part out of range, is ignored; one of a
// vector sized outside them is an error, and nothing is allocated for it;
// one of another length within them starts over); done when the vector is
// whole.
func (p *vectorParts) add(md meta, data []byte, least, most int) (done bool, err error) {
	if md.n < least || md.n > most {
		return false, fmt.Errorf("a part of a %d-element vector, not one of [%d, %d] values", md.n, least, most)
	}
	if p.v == nil || len(p.v) != md.n { // another answer's: start over
		p.v, p.got, p.total = make([]float32, md.n), map[int]bool{}, 0
	}
	count, err := float32sCount(data)
	if err != nil || md.off < 0 || md.off+count > md.n || p.got[md.off] {
		return false, nil
	}
	if err := decodeFloat32s(p.v[md.off:md.off+count], data); err != nil {
		return false, err
	}
	p.got[md.off] = true
	p.total += count
	return p.total == md.n, nil
}

func (r *Replica) onFetch(m *nats.Msg) {
	if strings.HasPrefix(m.Subject, r.prefix+".") || m.Reply == "" {
		return
	}
	if err := r.l.check(m); err != nil {
		r.reject("fetch", subjectFrom(m.Subject), err)
		return
	}
	var q resendReq
	if err := json.Unmarshal(m.Data, &q); err != nil {
		return
	}
	r.mu.Lock()
	d, ok := r.done[q.Step]
	if ok {
		d.v = slices.Clone(d.v) // its buffer is reused once the step is two behind
	}
	r.mu.Unlock()
	if !ok || q.Kind != fetchKind(d.updated) {
		return
	}
	r.answerFloat32s(m.Reply, meta{job: r.job, phase: r.phase, step: q.Step, n: len(d.v)}, d.v)
}

func fetchKind(updated bool) string {
	if updated {
		return "fetch-updated"
	}
	return "fetch"
}

// subjectFrom is the sender token of a lathe.<job>.<w|c>.<from>.… subject.
func subjectFrom(s string) string {
	parts := strings.SplitN(s, ".", 5)
	if len(parts) < 4 {
		return ""
	}
	return parts[3]
}

func (r *Replica) reject(what, from string, err error) {
	r.mu.Lock()
	r.stats.MessagesRejected++
	r.mu.Unlock()
	r.log.Warn("message rejected", "kind", what, "from", from, "error", err)
}

// acceptMeta checks a data message's identity against the replica's
// state, counting a refusal.
func (r *Replica) acceptMeta(md meta, from, kind string) bool {
	r.mu.Lock()
	gen, step := r.gen, r.curStep
	r.mu.Unlock()
	// An older generation's message for a step not reduced yet is still
	// that step's data (onPart refuses generations it no longer keeps).
	var err error
	switch {
	case md.job != r.job:
		err = fmt.Errorf("job %q, not %q", md.job, r.job)
	case md.phase != r.phase:
		err = fmt.Errorf("phase %d, not %d", md.phase, r.phase)
	case md.gen > gen+1:
		err = fmt.Errorf("generation %d, current %d", md.gen, gen)
	case md.step < step || md.step > step+Window:
		err = fmt.Errorf("step %d, current %d", md.step+1, step+1)
	case md.n <= 0 || md.off < 0 || md.off >= md.n:
		err = fmt.Errorf("part at %d of a %d-element vector", md.off, md.n)
	}
	if err != nil {
		r.reject(kind, from, err)
		return false
	}
	return true
}

// deliver implements receiver: it files a part a transport brought —
// a partial sum of our chunk (reduce-scatter, int64) or another owner's
// chunk (all-gather, float32) — once its identity is checked against the
// replica's state.
func (r *Replica) deliver(from string, p part) {
	partial := isPartial(p.kind)
	if from == r.name {
		return // ours: kept when sent
	}
	if !partial && p.kind != frameKinds[r.gather] {
		r.reject(partKind(partial), from, fmt.Errorf("a chunk of kind %d: this replica gathers %s", p.kind, r.gather))
		return
	}
	if !r.acceptMeta(p.md, from, partKind(partial)) {
		return
	}
	r.file(from, p)
}

// refuse implements receiver.
func (r *Replica) refuse(kind, from string, err error) { r.reject(kind, from, err) }

// faulted is the fault that ends this replica's steps, if any.
func (r *Replica) faulted() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fault
}

// useDirect sends the replica's parts over t where it can, and hands it
// what t receives (plane: PlaneAuto or PlanePeer).
func (r *Replica) useDirect(t transport, plane string) {
	r.direct, r.plane = t, plane
	t.attach(r)
}

func partKind(partial bool) string {
	if partial {
		return "reduce-scatter"
	}
	return "all-gather"
}

// file places a part whose identity was accepted, or keeps a copy when
// it cannot be placed yet. p.data is not kept.
func (r *Replica) file(from string, p part) {
	md, data, partial := p.md, p.data, isPartial(p.kind)
	kind := partKind(partial)
	// Checked here, decoded straight into the assembly below (a float
	// part's values are checked as they are decoded).
	var count int
	var err error
	if p.kind == frameRS {
		count, err = int64sCount(data)
	} else {
		count, err = float32sCount(data)
	}
	if err != nil {
		r.reject(kind, from, err)
		return
	}
	r.mu.Lock()
	if md.gen > r.gen || md.n != r.n {
		// Nothing is sized from a message: one of a generation not
		// installed yet, or sized for another vector than the one running,
		// waits (bounded) until the replica gets there; it is stale by then
		// unless it was real.
		wait := md.gen > r.gen || md.step > r.nStep
		if wait && r.holdLocked(from, p) {
			r.mu.Unlock()
			return
		}
		n := r.n
		r.mu.Unlock()
		r.reject(kind, from, fmt.Errorf("a %d-element vector, step %d runs %d (or too many such messages held)", md.n, md.step+1, n))
		return
	}
	// A partial is for our chunk; a reduced chunk is the sender's. Ranges
	// come from the message's generation, which may be the one before ours.
	owner, store := from, r.chunks
	if partial {
		owner, store = r.name, r.partials
	}
	members := r.byGen[md.gen]
	j := slices.Index(members, owner)
	if j < 0 || !slices.Contains(members, from) {
		r.mu.Unlock()
		r.reject(kind, from, fmt.Errorf("generation %d has no chunk of %s from %s", md.gen, owner, from))
		return
	}
	k := key{from, md.gen, md.step}
	a := store[k]
	if a == nil {
		lo, hi := chunk(md.n, len(members), j)
		a = &assembly{lo: lo, hi: hi, parts: map[int]bool{}}
		if partial {
			r.partialBuffersLocked(a, p.kind == frameRF)
		} else {
			a.f32 = r.gatheredLocked(md.gen, md.step, md.n)[lo:hi]
		}
		store[k] = a
	}
	if partial && a.floats != (p.kind == frameRF) {
		if a.got > 0 {
			r.mu.Unlock()
			r.reject(kind, from, fmt.Errorf("step %d: partials both as integers and as float32", md.step+1))
			return
		}
		// Only refused parts came before: the first placed decides.
		r.partialBuffersLocked(a, p.kind == frameRF)
	}
	err = a.place(md.off, count, func(at int) error {
		switch p.kind {
		case frameRS:
			decodeInt64s(a.i64[at:at+count], data)
			return nil
		case frameRF:
			return decodeFixable(a.f32[at:at+count], data)
		}
		return decodeFloat32s(a.f32[at:at+count], data)
	})
	if err == nil {
		r.stats.BytesReceived += int64(len(data))
	}
	r.mu.Unlock()
	if err != nil {
		r.reject(kind, from, err)
		return
	}
	r.poke()
}

// partialBuffersLocked gives a partials' assembly the buffer of its kind —
// float32 values or fixed-point sums — and hands back the other's, if it
// had one (r.mu held). Buffers of finished steps are reused: every element
// is written before the assembly is complete and read.
func (r *Replica) partialBuffersLocked(a *assembly, floats bool) {
	r.free32, r.free64 = keep(r.free32, a.f32), keep(r.free64, a.i64)
	a.f32, a.i64, a.floats = nil, nil, floats
	if floats {
		a.f32, r.free32 = take(r.free32, a.hi-a.lo)
	} else {
		a.i64, r.free64 = take(r.free64, a.hi-a.lo)
	}
}

// gatheredLocked is the vector the generation gen's run of step gathers
// into, n values (r.mu held).
func (r *Replica) gatheredLocked(gen uint64, step int64, n int) []float32 {
	k := genStep{gen, step}
	v, ok := r.gathered[k]
	if !ok || len(v) != n {
		v, r.freeFull = take(r.freeFull, n)
		r.gathered[k] = v
	}
	return v
}

// reuseReducedLocked takes the buffer of a reduced chunk the coordinator
// is done with and no resend reads, when it holds n values, and forgets
// the other such chunks but one (r.mu held); nil when there is none.
func (r *Replica) reuseReducedLocked(n int) []float32 {
	if sp := r.reducedSpare; r.syncEvery > 0 {
		r.reducedSpare = nil
		if cap(sp) >= n {
			return sp[:n]
		}
		return nil
	}
	done := r.coordSteps.Load()
	var out []float32
	spare := 0
	r.reduced = slices.DeleteFunc(r.reduced, func(v *sent) bool {
		if v.step >= done || v.readers > 0 {
			return false
		}
		if out == nil && cap(v.f32) >= n {
			out = v.f32[:n]
			return true
		}
		spare++
		return spare > 1
	})
	return out
}

// keep adds a finished buffer to a free list of a few.
func keep[T any](free [][]T, b []T) [][]T {
	if b == nil || len(free) >= 4 {
		return free
	}
	return append(free, b)
}

// take returns a buffer of n elements (contents undefined) from the free
// list, or a new one.
func take[T any](free [][]T, n int) ([]T, [][]T) {
	for i, b := range free {
		if cap(b) >= n {
			free[i] = free[len(free)-1]
			return b[:n], free[:len(free)-1]
		}
	}
	return make([]T, n), free
}

// place records a part of count elements at off; a duplicate (a resend)
// is ignored, a part outside the range is an error.
func (a *assembly) place(off, count int, put func(at int) error) error {
	if off < a.lo || off+count > a.hi {
		return fmt.Errorf("part [%d, %d) outside the chunk [%d, %d)", off, off+count, a.lo, a.hi)
	}
	if a.parts[off] {
		return nil
	}
	// A part put only in part (refused) is not recorded: its elements
	// are written again by the part that is.
	if err := put(off - a.lo); err != nil {
		return err
	}
	a.parts[off] = true
	a.got += count
	return nil
}

func (r *Replica) poke() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// PartElems bounds the elements of one part of a step's vectors: an
// owner reduces, updates and sends its chunk part by part as the others'
// partials of each come in (a teacher of 2.4 M parameters on 2 workers: 19
// parts a chunk), so that the parts still travelling overlap the work on
// those in.
var PartElems = 1 << 16

// partElems is how many elements of size bytes one part holds: PartElems,
// or fewer where the server's payload limit is lower.
func (r *Replica) partElems(size int) int {
	room := int(r.nc.MaxPayload()) - 4096
	return max(1, min(room/size, PartElems))
}

// sendPartial sends the partial p's range of owner o, rank j of size
// (reduce-scatter): fixed-point integers, or one micro-shard's float32
// values (cut as the integers are, so that a part is one part on every
// path).
func (r *Replica) sendPartial(o string, p *sent, j, size int) {
	md := meta{job: r.job, phase: r.phase, gen: p.gen, step: p.step, n: p.n}
	lo, hi := chunk(p.n, size, j)
	if !p.single() {
		r.sendInt64s([]string{o}, md, lo, p.i64[lo:hi])
		return
	}
	var gather []float32 // for a part that spans segments
	buf := encodeBufs.Get().(*[]byte)
	defer encodeBufs.Put(buf)
	r.parts(md, lo, hi-lo, 8, func(md meta, i, j int) {
		v := segmentsRange(p.segs, lo+i, lo+j, &gather)
		r.sendPart([]string{o}, part{kind: frameRF, md: md, data: float32Bytes(*buf, v)})
	})
}

// segmentsRange is the elements [a, b) of the vector segs cover in
// order: a segment's own values where one holds them all, else a copy in
// *gather.
func segmentsRange(segs [][]float32, a, b int, gather *[]float32) []float32 {
	at := 0
	for k, s := range segs {
		if a >= at+len(s) {
			at += len(s)
			continue
		}
		if b <= at+len(s) {
			return s[a-at : b-at]
		}
		out := append((*gather)[:0], s[a-at:]...)
		for _, s := range segs[k+1:] {
			out = append(out, s[:min(len(s), b-a-len(out))]...)
			if len(out) == b-a {
				break
			}
		}
		*gather = out
		return out
	}
	return nil
}

// dropSegs lets go of the last partial's float32 segments once no resend
// reads them: the trainer is about to compute again, over them.
func (r *Replica) dropSegs() {
	for {
		r.mu.Lock()
		p := r.partial
		if p == nil || p.segs == nil || p.readers == 0 {
			if p != nil {
				p.segs = nil
			}
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
}

// sendInt64s sends the partial sums v of the range at lo to its owners
// in to (reduce-scatter).
func (r *Replica) sendInt64s(to []string, md meta, lo int, v []int64) {
	buf := encodeBufs.Get().(*[]byte)
	defer encodeBufs.Put(buf)
	r.parts(md, lo, len(v), 8, func(md meta, i, j int) {
		*buf = encodeInt64s(*buf, v[i:j])
		r.sendPart(to, part{kind: frameRS, md: md, data: *buf})
	})
}

// sendFloat32s sends the chunk v at lo to the replicas in to: kind frameAG
// (reduced) or frameWG (updated).
func (r *Replica) sendFloat32s(kind byte, to []string, md meta, lo int, v []float32) {
	buf := encodeBufs.Get().(*[]byte)
	defer encodeBufs.Put(buf)
	r.parts(md, lo, len(v), 4, func(md meta, i, j int) {
		b := float32Bytes(*buf, v[i:j])
		if !littleEndian {
			*buf = b
		}
		r.sendPart(to, part{kind: kind, md: md, data: b})
	})
}

// answerFloat32s answers a request (a completed step, a chunk's
// optimizer state) with v, through NATS, in parts cut as chunks are.
func (r *Replica) answerFloat32s(subject string, md meta, v []float32) {
	buf := encodeBufs.Get().(*[]byte)
	defer encodeBufs.Put(buf)
	r.parts(md, 0, len(v), 4, func(md meta, i, j int) {
		b := float32Bytes(*buf, v[i:j])
		if !littleEndian {
			*buf = b
		}
		h := md.header()
		h.Set("Lathe-From", r.name)
		if err := r.l.publish(subject, h, b); err != nil {
			r.log.Warn("publish failed", "subject", subject, "error", err)
		}
		r.mu.Lock()
		r.stats.BytesSent += int64(len(b))
		r.stats.BrokerBytesSent += int64(len(b))
		r.mu.Unlock()
	})
}

// encodeBufs holds the buffers parts are encoded in (the transports copy
// what they send: one buffer serves every part).
var encodeBufs = sync.Pool{New: func() any { return new([]byte) }}

// parts cuts count elements of size bytes at lo into parts below the
// server's payload limit, each part's offset in its identity, and calls
// put with each (at least one, even for an empty range). The cut is the
// same whichever transport carries a part, so a part that arrives both
// ways is one part, placed once.
func (r *Replica) parts(md meta, lo, count, size int, put func(md meta, i, j int)) {
	per := r.partElems(size)
	for i := 0; ; i += per {
		j := min(i+per, count)
		md.off = lo + i
		put(md, i, j)
		if j == count {
			return
		}
	}
}

// sendPart sends p to the replicas in to: over the direct transport where
// there is one and it reaches them, through NATS to the rest — or, on the
// peer-only plane, not at all: the step fails, naming them.
func (r *Replica) sendPart(to []string, p part) {
	rest, direct := to, 0
	if r.direct != nil {
		rest = r.direct.send(to, p)
		direct = len(p.data) * (len(to) - len(rest))
		if len(rest) > 0 && r.plane == PlanePeer {
			r.mu.Lock()
			if r.fault == nil {
				r.fault = fmt.Errorf("cluster: step %d: peers %v cannot be reached, and the data plane is %q (no NATS path)", p.md.step+1, rest, PlanePeer)
			}
			r.mu.Unlock()
			r.poke()
			rest = nil
		}
	}
	if len(rest) > 0 {
		r.broker.send(rest, p)
	}
	r.mu.Lock()
	r.stats.PeerBytesSent += int64(direct)
	r.stats.BytesSent += int64(direct)
	if len(rest) > 0 {
		r.stats.BytesSent += int64(len(p.data))
		r.stats.BrokerBytesSent += int64(len(p.data))
	}
	r.mu.Unlock()
}

// subjectKind is a data subject's kind: rs, rf, ag or wg.
func subjectKind(subject string) string {
	parts := strings.Split(subject, ".")
	if len(parts) >= 6 && (parts[4] == "rs" || parts[4] == "rf") {
		return parts[4]
	}
	return parts[len(parts)-1]
}
