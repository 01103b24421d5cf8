package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
)

const coordinatorName = "coordinator"

// maxDigests bounds the digests a worker reported that wait for the
// coordinator to reach their steps (it reports one every DigestEvery
// steps, at most Window steps ahead).
const maxDigests = 64

// HeartbeatEvery is how often workers send heartbeats.
var HeartbeatEvery = 250 * time.Millisecond

// WorkerInfo is what the coordinator knows of a worker.
type WorkerInfo struct {
	Hello
	State    string    `json:"state"` // ready, training, task, lost, failed
	LastSeen time.Time `json:"last_seen"`
	Step     int64     `json:"step"`
	Error    string    `json:"error,omitempty"`
	// Data bytes the worker published and received in the current phase.
	BytesSent     int64 `json:"bytes_sent"`
	BytesReceived int64 `json:"bytes_received"`
	// PeerBytesSent of them went over peer connections; NATSBytesOut is
	// everything the worker published through the NATS server.
	PeerBytesSent int64 `json:"peer_bytes_sent"`
	NATSBytesOut  int64 `json:"nats_bytes_out"`
	// Samples the worker computed gradients of in the current phase.
	Samples int64 `json:"samples"`
	// SamplesPerSecond is the worker's own computing throughput in the
	// phase, from its heartbeats (smoothed).
	SamplesPerSecond float64 `json:"samples_per_second"`
	// Capacity is the worker's speed while computing (samples per second
	// of compute time, smoothed, kept across phases): the step is split
	// among the members in proportion to it.
	Capacity float64 `json:"capacity_samples_per_second"`
	// Share is the micro-shards of each step the worker computes in the
	// current generation.
	Share int `json:"share"`
	// ComputeSeconds, StepSeconds and WaitSeconds are the worker's time
	// computing micro-shards, in steps, and waiting on other replicas in
	// the current phase, CPUSeconds its process's CPU time in those steps
	// (Heartbeat).
	ComputeSeconds float64 `json:"compute_seconds"`
	StepSeconds    float64 `json:"step_seconds"`
	WaitSeconds    float64 `json:"wait_seconds"`
	CPUSeconds     float64 `json:"cpu_seconds"`
	shards         int64
	shardsAt       time.Time
	digests        map[int64]string // reported, not yet compared
	rejected       int64            // messages the worker refused, as it last reported
}

// MemberStats are the coordinator's counts over the job.
type MemberStats struct {
	MaxWorkers int `json:"workers"` // the most that took part at once
	// Restarts counts the membership changes that restarted every worker
	// from a following coordinator's last sync point.
	Restarts      int `json:"restarts,omitempty"`
	WorkersJoined int `json:"workers_joined"` // admitted to a phase while it ran
	WorkersLost   int `json:"workers_lost"`   // silent past the deadline
	WorkersFailed int `json:"workers_failed"` // reported a failure (a NaN or Inf in its gradient, say) and were left out
	Generations   int `json:"generations"`
	Rebalances    int `json:"rebalances"` // generations that only re-split the step by measured speed
	// DigestsCompared counts worker weight digests found equal to the
	// coordinator's; DigestMismatches those that differed (the worker is
	// left out, as a failed one).
	DigestsCompared  int   `json:"digests_compared"`
	DigestMismatches int   `json:"digest_mismatches"`
	MessagesRejected int64 `json:"messages_rejected"`
	// Refused are the registrations the coordinator turned away (a worker
	// without the job's secret, another protocol, a name taken), the
	// first maxRefused of them.
	Refused []Refusal `json:"workers_refused,omitempty"`
}

// startPhase sets a worker training with the counts its heartbeats
// restart from in a new phase.
func (w *WorkerInfo) startPhase() {
	w.State = "training"
	w.SamplesPerSecond, w.shards, w.shardsAt, w.digests = 0, 0, time.Time{}, nil
	w.ComputeSeconds, w.StepSeconds, w.WaitSeconds, w.CPUSeconds = 0, 0, 0, 0
}

// Refusal is a registration the coordinator turned away.
type Refusal struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
	Count  int    `json:"count"` // how often it was tried
}

// maxRefused bounds the refusals the coordinator remembers.
const maxRefused = 64

// Coordinator keeps a job's membership: workers register, send
// heartbeats, are dropped when they miss the deadline (a new generation
// re-plans the step among the others), and, when they register while a
// phase runs, join it at a step boundary a little ahead (JoinAhead), from
// the coordinator's state at that step.
type Coordinator struct {
	nc     *nats.Conn
	l      link // nc, signing and checking with the job's secret
	seqs   seqs // the newest heartbeat from each worker
	js     nats.JetStreamContext
	job    string
	log    hclog.Logger
	Dead   time.Duration // a worker silent this long is lost
	bucket string
	// Secret, when set, signs every message of the job and every object
	// the coordinator puts in its store (HMACs the workers check); it is
	// NewCoordinator's.
	Secret []byte

	mu      sync.Mutex
	workers map[string]*WorkerInfo
	order   []string // registration order
	phase   uint64
	gen     uint64
	members []string
	// samplesPerShard is the current phase's micro-shard size, shards its
	// micro-shards per step.
	samplesPerShard int
	shards          int
	// shares is the current generation's split of the micro-shards (nil:
	// equal), planned when it was set.
	shares  []int
	planned time.Time
	// proposed is the split the measured speeds last called for, since
	// proposedAt.
	proposed   []int
	proposedAt time.Time
	asked      map[string]time.Time // when unknown workers were last asked to register
	// plane is the job's data plane; peers the coordinator's end of it
	// (nil on PlaneNATS); peerTLS whether the workers encrypt their peer
	// connections.
	plane   string
	peers   *Peers
	peerTLS bool
	stored  map[string][32]byte // objects put in the store, by SHA-256
	rep     *Replica
	shared  map[string][]byte // values decided here for the running phase's replicas, by key
	spec    PhaseSpec         // the running phase's
	pending *joinPlan         // workers joining the running phase, not yet admitted
	stats   MemberStats
	joined  chan struct{}
	subs    []*nats.Subscription
	stop    chan struct{}
	wg      sync.WaitGroup
}

// JoinAhead is how many steps past the farthest any member may have
// started (Window/2 ahead of the coordinator) a joining worker's first
// step is: margin for the coordinator's step announcements in flight.
var JoinAhead int64 = 4

// joinPlan is a generation that adds workers from a step ahead: the
// coordinator hands them its state when its own trainer reaches it.
type joinPlan struct {
	gen     uint64
	from    int64
	names   []string // the joining workers
	members []string // the members before them
	// restart: the coordinator follows (PhaseSpec.SyncEvery), and every
	// member (names) restarts from its state at from, joiners new ones.
	restart bool
	joiners int
}

// NewCoordinator starts serving job's registrations on nc; with a secret,
// every message of the job is signed with it, and the workers' must be.
func NewCoordinator(nc *nats.Conn, job string, secret []byte, log hclog.Logger) (*Coordinator, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	js, err := nc.JetStream()
	if err != nil {
		return nil, fmt.Errorf("cluster: JetStream: %w", err)
	}
	c := &Coordinator{nc: nc, l: newLink(nc, secret), Secret: slices.Clone(secret), js: js, job: Token(job), log: log, Dead: 3 * time.Second, workers: map[string]*WorkerInfo{}, asked: map[string]time.Time{},
		stored: map[string][32]byte{},
		joined: make(chan struct{}), stop: make(chan struct{}), bucket: "lathe-" + Token(job)}
	base := "lathe." + c.job
	for _, h := range []struct {
		subject string
		fn      nats.MsgHandler
	}{
		{base + ".w.*.join", c.onJoin},
		{base + ".w.*.hb", c.onHeartbeat},
		{base + ".w.*.shared", c.onShared},
		{"lathe.discover", c.onDiscover},
	} {
		sub, err := nc.Subscribe(h.subject, h.fn)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("cluster: subscribe %s: %w", h.subject, err)
		}
		c.subs = append(c.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		c.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if err := c.SetDataPlane(PlaneAuto, PeerConfig{}); err != nil {
		c.Close()
		return nil, err
	}
	c.wg.Add(1)
	go c.monitor()
	return c, nil
}

// SetDataPlane chooses how the phases' bulk data travels (PlaneAuto, the
// default, listening on every interface; PlanePeer; PlaneNATS) and where
// the coordinator's end of the peer data plane listens; it applies from
// the next phase.
func (c *Coordinator) SetDataPlane(plane string, cfg PeerConfig) error {
	plane, err := ParsePlane(plane)
	if err != nil {
		return err
	}
	mode, err := ParsePeerTLS(cfg.TLS)
	if err != nil {
		return err
	}
	encrypt := mode == PeerTLSOn
	if mode == PeerTLSAuto {
		_, err := c.nc.TLSConnectionState()
		encrypt = err == nil
	}
	var p *Peers
	if plane != PlaneNATS {
		if p, err = ListenPeers(c.job, coordinatorName, c.Secret, cfg, c.nc.ConnectedUrl(), c.log.Named("peers")); err != nil {
			return err
		}
	}
	c.mu.Lock()
	old := c.peers
	c.plane, c.peers, c.peerTLS = plane, p, encrypt
	c.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// DataPlane is the job's data plane and the coordinator's peer address
// ("" on PlaneNATS).
func (c *Coordinator) DataPlane() (plane, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peers != nil {
		addr = c.peers.Addr()
	}
	return c.plane, addr
}

// Close stops the coordinator's subscriptions and tells the workers the
// job is over.
func (c *Coordinator) Close() {
	select {
	case <-c.stop:
		return
	default:
	}
	close(c.stop)
	c.wg.Wait()
	c.control(Control{Kind: "stop"})
	_ = c.nc.Flush()
	for _, s := range c.subs {
		_ = s.Unsubscribe()
	}
	c.mu.Lock()
	p := c.peers
	c.peers = nil
	c.mu.Unlock()
	if p != nil {
		p.Close()
	}
}

// control sends m to every worker; phase, join and gen messages, sent
// with c.mu held, carry the data plane and the peers' addresses.
func (c *Coordinator) control(m Control) {
	switch m.Kind {
	case "phase", "join", "gen":
		m.Plane, m.PeerTLS = c.plane, c.peerTLS
		if c.peers != nil {
			m.Peers = map[string]string{coordinatorName: c.peers.Addr()}
			for _, n := range c.members {
				if w := c.workers[n]; w != nil && w.Peer != "" {
					m.Peers[n] = w.Peer
				}
			}
			c.peers.SetAddrs(m.Peers)
		}
	}
	b, _ := json.Marshal(m)
	if err := c.l.publish("lathe."+c.job+".c.ctl", nil, b); err != nil {
		c.log.Warn("control message not sent", "kind", m.Kind, "error", err)
	}
}

// onDiscover names the job to a worker looking for one (unsigned: a
// worker with another secret learns from its registration's answer).
func (c *Coordinator) onDiscover(m *nats.Msg) { _ = m.Respond([]byte(c.job)) }

func (c *Coordinator) onJoin(m *nats.Msg) {
	from := subjectFrom(m.Subject)
	var h Hello
	w := Welcome{OK: true}
	bad := c.l.check(m)
	if bad == nil && !c.seqs.newer("join."+from, m) {
		// A copy of a registration seen before: counted, not answered.
		c.reject("registration", from, errors.New("replayed"))
		return
	}
	err := json.Unmarshal(m.Data, &h)
	if bad == nil && err == nil {
		c.seqs.record("join."+from, m)
	}
	switch {
	case bad != nil:
		w = Welcome{Error: bad.Error()}
	case err != nil:
		w = Welcome{Error: fmt.Sprintf("bad registration: %v", err)}
	case h.Version != Version:
		w = Welcome{Error: fmt.Sprintf("protocol %q, the coordinator speaks %q", h.Version, Version)}
	case Token(h.Name) != from:
		w = Welcome{Error: fmt.Sprintf("name %q does not match the subject's %q", h.Name, from)}
	}
	c.mu.Lock()
	if old := c.workers[from]; w.OK && old != nil && old.State != "lost" && old.PID != h.PID && time.Since(old.LastSeen) < c.Dead {
		w = Welcome{Error: fmt.Sprintf("a worker named %q is already registered", from)}
	}
	if w.OK {
		if c.workers[from] == nil {
			c.order = append(c.order, from)
		}
		c.workers[from] = &WorkerInfo{Hello: h, State: "ready", LastSeen: time.Now()}
		c.log.Info("worker joined", "worker", from, "cores", h.Cores, "device", h.Device, "pid", h.PID)
		close(c.joined)
		c.joined = make(chan struct{})
		c.planJoinLocked(false)
	} else {
		c.stats.MessagesRejected++
		c.refusedLocked(from, w.Error)
		c.log.Warn("worker refused", "worker", from, "reason", w.Error)
	}
	c.mu.Unlock()
	b, _ := json.Marshal(w)
	_ = c.l.respond(m, nil, b)
}

// refusedLocked records a refused registration (c.mu held).
func (c *Coordinator) refusedLocked(name, reason string) {
	for i, r := range c.stats.Refused {
		if r.Name == name && r.Reason == reason {
			c.stats.Refused[i].Count++
			return
		}
	}
	if len(c.stats.Refused) < maxRefused {
		c.stats.Refused = append(c.stats.Refused, Refusal{Name: name, Reason: reason, Count: 1})
	}
}

func (c *Coordinator) onHeartbeat(m *nats.Msg) {
	from := subjectFrom(m.Subject)
	var hb Heartbeat
	if err := c.l.check(m); err != nil {
		c.reject("heartbeat", from, err)
		return
	}
	if !c.seqs.newer("hb."+from, m) {
		c.reject("heartbeat", from, errors.New("replayed"))
		return
	}
	if err := json.Unmarshal(m.Data, &hb); err != nil {
		c.reject("heartbeat", from, err)
		return
	}
	c.seqs.record("hb."+from, m)
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.workers[from]
	if w == nil || w.State == "lost" {
		// A worker this coordinator does not know (it was restarted, or
		// dropped the worker as lost): ask it to register, at most once a
		// second.
		if time.Since(c.asked[from]) >= time.Second {
			c.asked[from] = time.Now()
			c.log.Info("a worker it does not know is alive; asking it to register", "worker", from)
			c.control(Control{Kind: "register", Members: []string{from}})
		}
		return
	}
	w.LastSeen, w.Step = time.Now(), hb.Step
	w.rejected = max(w.rejected, hb.MessagesRejected)
	if hb.Phase == c.phase {
		w.BytesSent, w.BytesReceived = hb.BytesSent, hb.BytesReceived
		w.PeerBytesSent, w.NATSBytesOut = hb.PeerBytesSent, hb.NATSBytesOut
		w.Samples = hb.Shards * int64(c.samplesPerShard)
		now := time.Now()
		if !w.shardsAt.IsZero() && hb.Shards >= w.shards && c.samplesPerShard > 0 {
			done := float64((hb.Shards - w.shards) * int64(c.samplesPerShard))
			rate := done / now.Sub(w.shardsAt).Seconds()
			w.SamplesPerSecond = 0.5*w.SamplesPerSecond + 0.5*rate
			if busy := hb.ComputeSeconds - w.ComputeSeconds; busy > 0 && done > 0 {
				if capa := done / busy; w.Capacity == 0 {
					w.Capacity = capa
				} else {
					w.Capacity = 0.5*w.Capacity + 0.5*capa
				}
			}
		}
		w.shards, w.shardsAt = hb.Shards, now
		w.ComputeSeconds, w.StepSeconds, w.WaitSeconds, w.CPUSeconds = hb.ComputeSeconds, hb.StepSeconds, hb.WaitSeconds, hb.CPUSeconds
		if hb.Digest != "" && w.State == "training" && len(w.digests) < maxDigests {
			if w.digests == nil {
				w.digests = map[int64]string{}
			}
			w.digests[hb.DigestStep] = hb.Digest
		}
	}
	if hb.State == "failed" && w.State != "failed" {
		w.State, w.Error = "failed", hb.Error
		c.stats.WorkersFailed++
		c.log.Error("worker failed; it is left out", "worker", from, "error", hb.Error)
		c.dropLocked(from)
	}
}

// monitor drops workers that miss the heartbeat deadline.
func (c *Coordinator) monitor() {
	defer c.wg.Done()
	t := time.NewTicker(HeartbeatEvery)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		c.mu.Lock()
		for _, name := range c.order {
			w := c.workers[name]
			if (w.State == "ready" || w.State == "training" || w.State == "task") && time.Since(w.LastSeen) > c.Dead {
				w.State = "lost"
				c.stats.WorkersLost++
				c.log.Warn("worker lost: no heartbeat", "worker", name, "silent", time.Since(w.LastSeen).Round(time.Millisecond))
				c.dropLocked(name)
			}
		}
		c.rebalanceLocked()
		c.compareDigestsLocked()
		c.mu.Unlock()
	}
}

// CompareDigests compares the digests the members reported with the
// coordinator's own now, as the monitor does every heartbeat interval: at
// the end of a phase the coordinator has reached every step a worker
// reported, and a short phase may end before the monitor's next look.
func (c *Coordinator) CompareDigests() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.compareDigestsLocked()
}

// compareDigestsLocked compares the weight digests the members reported
// with the coordinator's own for the same steps; a worker whose weights
// differ is left out like a failed one (c.mu held).
func (c *Coordinator) compareDigestsLocked() {
	if c.rep == nil {
		return
	}
	for _, name := range slices.Clone(c.members) {
		w := c.workers[name]
		for step, d := range w.digests {
			own, ok, oldest := c.rep.digest(step)
			if !ok && (oldest < 0 || step >= oldest) {
				continue // the coordinator has not reached that step yet
			}
			delete(w.digests, step)
			if !ok {
				continue // older than anything the coordinator still holds
			}
			if own == d {
				c.stats.DigestsCompared++
				continue
			}
			c.stats.DigestMismatches++
			c.stats.WorkersFailed++
			w.State, w.Error = "failed", fmt.Sprintf("its weights after step %d differ from the coordinator's (digest %.16s…, the coordinator's %.16s…)", step, d, own)
			w.digests = nil
			c.log.Error("a worker's weights drifted from the coordinator's; it is left out", "worker", name, "step", step)
			c.dropLocked(name)
			break
		}
	}
}

// RebalanceEvery is the least time between two re-splits of the step (and
// how long the measured speeds must keep calling for the same split), and
// RebalanceGain the least gain in step time (as a fraction) one must
// promise: each costs the step in flight, computed again.
var (
	RebalanceEvery = 2 * time.Second
	RebalanceGain  = 0.1
)

// weightedLocked is the split of the step among the members by their
// capacities: nil (equal) while one is unknown (c.mu held).
func (c *Coordinator) weightedLocked() []int {
	caps := make([]float64, len(c.members))
	for i, n := range c.members {
		caps[i] = c.workers[n].Capacity
	}
	return weightedShares(c.shards, caps)
}

// setSharesLocked records a generation's split (c.mu held).
func (c *Coordinator) setSharesLocked(shares []int) {
	c.shares, c.planned = shares, time.Now()
	for i, n := range c.members {
		c.workers[n].Share = len(plan(c.shards, shares, len(c.members), i))
	}
}

// rebalanceLocked re-splits the step among the same members when their
// measured capacities promise a step RebalanceGain faster: a generation
// with the same members and new shares (c.mu held).
func (c *Coordinator) rebalanceLocked() {
	if c.rep == nil || c.pending != nil || len(c.members) < 2 || time.Since(c.planned) < RebalanceEvery {
		return
	}
	next := c.weightedLocked()
	if next == nil || slices.Equal(next, c.shares) {
		c.proposed = nil
		return
	}
	// The same split must be proposed for RebalanceEvery before it is
	// taken: speeds measured on busy cores swing, and a split that flips
	// back and forth costs a step each time.
	if !slices.Equal(next, c.proposed) {
		c.proposed, c.proposedAt = next, time.Now()
		return
	}
	if time.Since(c.proposedAt) < RebalanceEvery {
		return
	}
	caps := make([]float64, len(c.members))
	for i, n := range c.members {
		caps[i] = c.workers[n].Capacity
	}
	now, then := stepTime(c.shards, c.shares, caps), stepTime(c.shards, next, caps)
	if !(then < (1-RebalanceGain)*now) {
		return
	}
	c.gen++
	c.stats.Generations++
	c.stats.Rebalances++
	c.setSharesLocked(next)
	c.log.Info("the step is re-split by the workers' measured speeds", "generation", c.gen, "workers", c.members, "shares", next,
		"step_time_gain", fmt.Sprintf("%.0f%%", 100*(1-then/now)))
	c.control(Control{Kind: "gen", Phase: c.phase, Gen: c.gen, Members: c.members, Shares: next})
	c.rep.SetGen(c.gen, c.members, next, "", 0)
}

// dropLocked removes a worker from the phase's membership: a new
// generation (c.mu held). A join not yet admitted is called off and
// planned again among those left.
func (c *Coordinator) dropLocked(name string) {
	if c.rep != nil && c.rep.Follows() {
		c.dropFollowingLocked(name)
		return
	}
	p := c.pending
	if p != nil {
		c.pending = nil
		c.rep.joinAt.Store(-1)
		c.members = p.members
	}
	i := slices.Index(c.members, name)
	if i < 0 && p == nil {
		return
	}
	if i >= 0 {
		c.members = slices.Delete(slices.Clone(c.members), i, i+1)
	}
	c.gen++
	c.stats.Generations++
	failure := ""
	if len(c.members) == 0 {
		failure = "no worker left in the phase"
		for _, n := range c.order {
			if w := c.workers[n]; w.State == "failed" {
				failure = fmt.Sprintf("every worker failed; %s: %s", n, w.Error)
			}
		}
	}
	c.setSharesLocked(c.weightedLocked())
	c.log.Info("membership changed: the step is re-planned", "generation", c.gen, "workers", len(c.members), "shares", c.shares)
	c.control(Control{Kind: "gen", Phase: c.phase, Gen: c.gen, Members: c.members, Shares: c.shares, Error: failure})
	if c.rep != nil {
		c.rep.SetGen(c.gen, c.members, c.shares, failure, 0)
	}
	if p != nil && failure == "" {
		c.planJoinLocked(true)
	}
}

// planJoinLocked plans a generation that adds the ready workers outside
// the membership of the running phase, from a step no member can have
// started yet (c.mu held): the members switch to it there and wait for
// the joiners, whom Admit hands the coordinator's state at that step.
// Without afresh, a join already planned keeps its step (its members may
// be waiting there) and takes the newcomers along.
func (c *Coordinator) planJoinLocked(afresh bool) {
	if c.rep == nil || !c.rep.joinable.Load() || len(c.members) == 0 {
		return
	}
	if c.rep.Follows() {
		c.joinFollowingLocked()
		return
	}
	before := c.members
	from := c.rep.steps.Load() + Window/2 + JoinAhead
	if p := c.pending; p != nil && !afresh {
		before, from = p.members, p.from
	}
	var joiners []string
	for _, n := range c.order {
		if w := c.workers[n]; w.State == "ready" && !slices.Contains(before, n) {
			joiners = append(joiners, n)
		}
	}
	if len(joiners) == 0 {
		return
	}
	c.gen++
	c.stats.Generations++
	c.members = append(slices.Clone(before), joiners...)
	c.pending = &joinPlan{gen: c.gen, from: from, names: joiners, members: before}
	c.setSharesLocked(c.weightedLocked())
	c.log.Info("workers join the running phase", "workers", joiners, "at_step", from+1, "generation", c.gen, "shares", c.shares)
	c.control(Control{Kind: "gen", Phase: c.phase, Gen: c.gen, Members: c.members, Shares: c.shares, From: from})
	c.rep.SetGen(c.gen, c.members, c.shares, "", from)
	c.rep.joinAt.Store(from)
}

// Share publishes a value decided here (a sensitivity table, say) to the
// running phase's replicas, which wait for it with Replica.Await.
func (c *Coordinator) Share(key string, value []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shared == nil {
		c.shared = map[string][]byte{}
	}
	c.shared[key] = value
}

// sharedReq asks for a shared value of a phase.
type sharedReq struct {
	Phase uint64 `json:"phase"`
	Key   string `json:"key"`
}

// reject counts a message refused before c.mu is taken.
func (c *Coordinator) reject(kind, from string, err error) {
	c.mu.Lock()
	c.stats.MessagesRejected++
	c.mu.Unlock()
	c.log.Warn("message rejected", "kind", kind, "from", from, "error", err)
}

// onShared answers a replica's request for a shared value: the value, or
// nothing while it is not decided yet.
func (c *Coordinator) onShared(m *nats.Msg) {
	var q sharedReq
	if err := c.l.check(m); err != nil {
		c.reject("shared value request", subjectFrom(m.Subject), err)
		return
	}
	if err := json.Unmarshal(m.Data, &q); err != nil {
		c.reject("shared value request", subjectFrom(m.Subject), err)
		return
	}
	c.mu.Lock()
	var v []byte
	if q.Phase == c.phase {
		v = c.shared[q.Key]
	}
	c.mu.Unlock()
	_ = c.l.respond(m, nil, v)
}

// Admit hands the workers joining at step the coordinator's state there
// (a training checkpoint): its trainer calls it before running that step
// (trainer.Config.ShareState). Nothing happens when no join is planned at
// step.
func (c *Coordinator) Admit(step int64, state []byte) error {
	c.mu.Lock()
	p, spec := c.pending, c.spec
	c.mu.Unlock()
	if p == nil || p.from != step {
		return nil
	}
	name := fmt.Sprintf("%s.join-%d.arrow", Token(spec.Name), step)
	if err := c.putFiles(map[string][]byte{name: state}); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending != p {
		return nil // planned again meanwhile: admitted at its own step
	}
	c.pending = nil
	c.rep.joinAt.Store(-1)
	spec.Resume, spec.StartStep = name, step
	for _, n := range p.names {
		w := c.workers[n]
		w.startPhase()
	}
	c.stats.MaxWorkers = max(c.stats.MaxWorkers, len(c.members))
	if p.restart {
		c.stats.WorkersJoined += p.joiners
		c.stats.Restarts++
		c.log.Info("every worker restarts from the coordinator's state", "workers", p.names, "step", step+1, "state_bytes", len(state))
	} else {
		c.stats.WorkersJoined += len(p.names)
		c.log.Info("joining workers admitted with the state at their first step", "workers", p.names, "step", step+1, "state_bytes", len(state))
	}
	c.control(Control{Kind: "join", Phase: c.phase, Gen: p.gen, Members: c.members, Shares: c.shares, From: step, Join: p.names, Spec: &spec})
	return nil
}

// WaitWorkers blocks until at least n workers are ready.
func (c *Coordinator) WaitWorkers(ctx context.Context, n int) error {
	logged := false
	for {
		c.mu.Lock()
		ready := 0
		for _, w := range c.workers {
			if w.State == "ready" || w.State == "training" {
				ready++
			}
		}
		joined := c.joined
		c.mu.Unlock()
		if ready >= n {
			return nil
		}
		if !logged {
			c.log.Info("waiting for workers", "have", ready, "need", n)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-joined:
		case <-time.After(time.Second):
		}
	}
}

// Shares is the current split of the step among the members (micro-shards
// each computes), or nil while it is equal.
func (c *Coordinator) Shares() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shares == nil {
		return nil
	}
	out := map[string]int{}
	for i, n := range c.members {
		out[n] = c.shares[i]
	}
	return out
}

// Workers lists the workers known, in registration order.
func (c *Coordinator) Workers() []WorkerInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []WorkerInfo
	for _, n := range c.order {
		out = append(out, *c.workers[n])
	}
	return out
}

// Stats returns the membership counts, with the coordinator replica's
// rejected messages.
func (c *Coordinator) Stats() MemberStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Refused = slices.Clone(s.Refused)
	if c.rep != nil {
		s.MessagesRejected += c.rep.Stats().MessagesRejected
	}
	for _, w := range c.workers {
		s.MessagesRejected += w.rejected
	}
	return s
}

// Phase starts a training phase on the ready workers: the files go to the
// job's object store, the workers receive the spec and the first
// generation, and the coordinator's own replica (which computes nothing)
// is returned for the coordinator's trainer.
func (c *Coordinator) Phase(ctx context.Context, spec PhaseSpec, files map[string][]byte) (*Replica, error) {
	if err := c.putFiles(files); err != nil {
		return nil, err
	}
	spec.Bucket = c.bucket
	c.mu.Lock()
	defer c.mu.Unlock()
	c.phase++
	c.gen++
	c.spec, c.pending, c.shared = spec, nil, nil
	c.samplesPerShard, c.shards = spec.SamplesPerShard, spec.MicroShards
	c.stats.Generations++
	c.members = nil
	for _, n := range c.order {
		if w := c.workers[n]; w.State == "ready" || w.State == "training" {
			w.startPhase()
			c.members = append(c.members, n)
		}
	}
	if len(c.members) == 0 {
		return nil, errors.New("cluster: no worker is ready")
	}
	c.stats.MaxWorkers = max(c.stats.MaxWorkers, len(c.members))
	rep, err := NewReplica(c.nc, c.Secret, c.job, coordinatorName, c.phase, spec.MicroShards, c.gen, c.members, c.log.Named("replica"))
	if err != nil {
		return nil, err
	}
	if err := rep.follow(spec.SyncEvery); err != nil {
		rep.Close()
		return nil, err
	}
	if c.peers != nil {
		rep.useDirect(c.peers, c.plane)
	}
	rep.Start(spec.StartStep)
	// Workers measured in earlier phases start with a split by their
	// speeds; until every member is measured, an equal one.
	c.setSharesLocked(c.weightedLocked())
	rep.SetShares(c.shares)
	if c.rep != nil {
		c.rep.Close()
	}
	c.rep = rep
	c.log.Info("phase starting", "phase", c.phase, "name", spec.Name, "workers", c.members, "micro_shards", spec.MicroShards, "shares", c.shares)
	c.control(Control{Kind: "phase", Phase: c.phase, Gen: c.gen, Members: c.members, Shares: c.shares, Spec: &spec})
	return rep, nil
}

// EndPhase tells the workers the phase is over.
func (c *Coordinator) EndPhase() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.members {
		if w := c.workers[n]; w.State == "training" {
			w.State = "ready"
		}
	}
	c.control(Control{Kind: "end", Phase: c.phase})
	c.pending = nil
	if c.rep != nil {
		c.rep.Close()
		c.rep = nil
	}
}

func (c *Coordinator) objectStore() (nats.ObjectStore, error) {
	obs, err := c.js.ObjectStore(c.bucket)
	if errors.Is(err, nats.ErrStreamNotFound) || errors.Is(err, nats.ErrBucketNotFound) {
		obs, err = c.js.CreateObjectStore(&nats.ObjectStoreConfig{Bucket: c.bucket, Description: "lathe job files"})
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: object store %s: %w", c.bucket, err)
	}
	return obs, nil
}

// dropFollowingLocked removes a worker from a following phase (c.mu
// held): the optimizer state of its chunk since the last sync point is
// gone with it, so those left restart from the coordinator's state there.
func (c *Coordinator) dropFollowingLocked(name string) {
	i := slices.Index(c.members, name)
	if i < 0 {
		return
	}
	c.members = slices.Delete(slices.Clone(c.members), i, i+1)
	joiners := 0
	if p := c.pending; p != nil {
		joiners = p.joiners
		if !slices.Contains(p.members, name) { // a joiner not admitted yet
			joiners = max(0, joiners-1)
		}
	}
	if len(c.members) == 0 {
		c.pending = nil
		c.rep.joinAt.Store(-1)
		c.gen++
		c.stats.Generations++
		failure := "no worker left in the phase"
		for _, n := range c.order {
			if w := c.workers[n]; w.State == "failed" {
				failure = fmt.Sprintf("every worker failed; %s: %s", n, w.Error)
			}
		}
		c.control(Control{Kind: "gen", Phase: c.phase, Gen: c.gen, Error: failure})
		c.rep.SetGen(c.gen, nil, nil, failure, 0)
		return
	}
	c.restartLocked(joiners)
}

// joinFollowingLocked adds the ready workers outside the membership to a
// following phase (c.mu held): every member restarts with them from the
// coordinator's state at its last sync point.
func (c *Coordinator) joinFollowingLocked() {
	var joiners []string
	for _, n := range c.order {
		if w := c.workers[n]; w.State == "ready" && !slices.Contains(c.members, n) {
			joiners = append(joiners, n)
		}
	}
	if len(joiners) == 0 {
		return
	}
	n := len(joiners)
	if p := c.pending; p != nil {
		n += p.joiners
	}
	c.members = append(slices.Clone(c.members), joiners...)
	c.restartLocked(n)
}

// restartLocked plans a generation of the present members that starts
// from the following coordinator's state (its last sync point), which
// Admit hands every member when the coordinator's trainer shares it
// (c.mu held).
func (c *Coordinator) restartLocked(joiners int) {
	from := c.rep.takenStep()
	c.gen++
	c.stats.Generations++
	before := c.members[:len(c.members)-joiners]
	c.pending = &joinPlan{gen: c.gen, from: from, names: slices.Clone(c.members), members: slices.Clone(before), restart: true, joiners: joiners}
	c.setSharesLocked(c.weightedLocked())
	c.log.Info("membership changed: every worker restarts from the coordinator's last sync point", "workers", c.members, "at_step", from+1, "generation", c.gen)
	c.rep.SetGen(c.gen, c.members, c.shares, "", from)
	c.rep.joinAt.Store(from)
}
