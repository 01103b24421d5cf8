package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
)

// PhaseFunc runs one phase as a replica: it trains with par and returns
// when the phase's last step is done.
type PhaseFunc func(ctx context.Context, spec PhaseSpec, files map[string][]byte, par *Replica) error

// Worker is a cluster worker: it registers with a job's coordinator, sends
// heartbeats, and runs the phases it is given.
type Worker struct {
	NC     *nats.Conn
	Job    string // "" finds the only job on the NATS deployment
	Name   string
	Device string
	Log    hclog.Logger
	Run    PhaseFunc
	// Task runs the job-parallel tasks the coordinator hands this worker
	// (nil: it refuses them, with a result saying so).
	Task TaskFunc
	// Secret is the job's secret: objects from the store must carry its
	// HMAC (nil: they must carry none).
	Secret []byte
	// Peer is where the worker's end of the peer data plane listens
	// (Listen "off": nowhere; the worker's data goes through NATS).
	Peer PeerConfig

	l        link // NC with Secret
	ctlSeqs  seqs // the newest control message
	rejected atomic.Int64

	peers *Peers // the job's peer data plane (nil: none)

	mu    sync.Mutex
	rep   *Replica
	phase uint64
	state string
	err   string
	cache map[string][]byte // dataset objects, kept across the job's phases
}

// Discover returns the name of the only job whose coordinator answers on
// nc within wait; it fails when there are none or several.
func Discover(nc *nats.Conn, wait time.Duration) (string, error) {
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("lathe.discover", inbox, nil); err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	var jobs []string
	deadline := time.Now().Add(wait)
	for {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		if j := string(m.Data); !slices.Contains(jobs, j) {
			jobs = append(jobs, j)
		}
	}
	switch len(jobs) {
	case 0:
		return "", nil
	case 1:
		return jobs[0], nil
	}
	return "", fmt.Errorf("cluster: several jobs are running (%v): pass --job", jobs)
}

// Serve runs until the coordinator stops the job, the connection closes or
// ctx is done.
func (w *Worker) Serve(ctx context.Context) error {
	if w.Log == nil {
		w.Log = hclog.NewNullLogger()
	}
	w.l = newLink(w.NC, w.Secret)
	if w.Job != "" {
		return w.serveJob(ctx, false)
	}
	for {
		// A job found by discovery may end before this worker registers:
		// then look for the next one.
		if err := w.serveJob(ctx, true); !errors.Is(err, errJobGone) {
			return err
		}
		w.Log.Info("the job ended before this worker registered; looking for another", "job", w.Job)
		w.Job = ""
	}
}

// errJobGone says a discovered job's coordinator stopped answering before
// the worker registered.
var errJobGone = errors.New("cluster: the job's coordinator is gone")

// JobGoneAfter is how long a worker that found its job by discovery tries
// to register before it looks for another job.
var JobGoneAfter = 5 * time.Second

// serveJob is Serve for one job (discovered first when w.Job is empty).
func (w *Worker) serveJob(ctx context.Context, discovered bool) error {
	if w.Job == "" {
		logged := false
		for w.Job == "" {
			j, err := Discover(w.NC, time.Second)
			if err != nil {
				return err
			}
			if w.Job = j; j == "" {
				if !logged {
					w.Log.Info("no job running yet; waiting for one")
					logged = true
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Second):
				}
			}
		}
		w.Log.Info("found the job", "job", w.Job)
	}
	job, name := Token(w.Job), Token(w.Name)
	prefix := "lathe." + job + ".w." + name
	ctl := make(chan *nats.Msg, 64)
	sub, err := w.NC.ChanSubscribe("lathe."+job+".c.ctl", ctl)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)
	w.state = "idle"
	if w.Peer.Listen != "off" {
		p, err := ListenPeers(job, name, w.Secret, w.Peer, w.NC.ConnectedUrl(), w.Log.Named("peers"))
		if err != nil {
			return err
		}
		w.peers = p
		defer func() {
			p.Close()
			w.peers = nil
		}()
		w.Log.Debug("peer data plane listening", "addr", p.Addr())
	}
	if err := w.register(ctx, prefix, discovered); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go w.heartbeats(ctx, prefix)
	closed := make(chan struct{})
	w.NC.SetClosedHandler(func(*nats.Conn) { close(closed) })
	var phaseDone chan error
	cancelPhase := context.CancelFunc(func() {})
	defer func() { cancelPhase() }()
	// stopPhase ends the phase running here, if any, and waits for it;
	// the worker is idle after it.
	stopPhase := func() error {
		if phaseDone == nil {
			return nil
		}
		cancelPhase()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-closed:
			return errors.New("cluster: the connection to NATS closed")
		case <-phaseDone:
		}
		phaseDone = nil
		w.mu.Lock()
		w.state = "idle"
		w.mu.Unlock()
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-closed:
			return errors.New("cluster: the connection to NATS closed")
		case err := <-phaseDone:
			phaseDone = nil
			w.mu.Lock()
			if err != nil {
				w.state, w.err = "failed", err.Error()
				w.Log.Error("phase failed", "phase", w.phase, "error", err)
			} else {
				if w.state == "training" {
					w.Log.Info("phase done", "phase", w.phase)
				}
				w.state = "idle"
			}
			w.mu.Unlock()
		case m := <-ctl:
			c, err := w.control(m)
			if err != nil {
				w.rejected.Add(1)
				w.Log.Warn("control message rejected", "error", err)
				continue
			}
			switch c.Kind {
			case "stop":
				w.Log.Info("the coordinator ended the job")
				return nil
			case "task":
				if c.Task == nil || !slices.Contains(c.Members, name) {
					continue
				}
				w.mu.Lock()
				training := w.state == "training" && w.rep != nil
				w.mu.Unlock()
				if training && phaseDone != nil {
					// A task of the running phase (a sensitivity cell): beside
					// the replica, which waits for its outcome.
					w.Log.Info("task beside the phase", "task", c.Task.ID, "kind", c.Task.Kind)
					go w.runTask(ctx, prefix, *c.Task)
					continue
				}
				if phaseDone != nil {
					if err := stopPhase(); err != nil {
						return err
					}
				}
				w.mu.Lock()
				w.state = "task"
				w.mu.Unlock()
				w.Log.Info("task", "task", c.Task.ID, "kind", c.Task.Kind)
				phaseDone = make(chan error, 1)
				tctx, cancel := context.WithCancel(ctx)
				cancelPhase = cancel
				go func(spec TaskSpec) {
					defer cancel()
					w.runTask(tctx, prefix, spec)
					phaseDone <- nil
				}(*c.Task)
			case "gen":
				w.setPeers(c)
				w.mu.Lock()
				if w.rep != nil && c.Phase == w.phase {
					w.rep.SetGen(c.Gen, c.Members, c.Shares, c.Error, c.From)
				}
				w.mu.Unlock()
			case "register":
				if !slices.Contains(c.Members, name) {
					continue
				}
				// The coordinator does not know this worker: it was
				// restarted, or dropped it as lost. Whatever phase runs
				// here is none of its plan: stop it, and register anew.
				if err := stopPhase(); err != nil {
					return err
				}
				w.mu.Lock()
				w.closeReplicaLocked()
				w.state, w.err = "idle", ""
				w.mu.Unlock()
				w.Log.Info("the coordinator does not know this worker (restarted?); registering again")
				if err := w.register(ctx, prefix, false); err != nil {
					return err
				}
			case "end":
				w.mu.Lock()
				if c.Phase == w.phase {
					w.closeReplicaLocked()
				}
				w.mu.Unlock()
			case "phase", "join":
				if c.Spec == nil || !slices.Contains(c.Members, name) {
					continue
				}
				if c.Kind == "join" && !slices.Contains(c.Join, name) {
					continue // a member already: it has the generation
				}
				if phaseDone != nil {
					// The coordinator has moved on, so the last phase is over
					// for everyone; it may still be winding down here (its
					// last evaluation). Stop it and take part in this one:
					// the others wait for this worker's share. Or, in a phase
					// whose coordinator follows, a membership change restarts
					// every worker from the coordinator's last sync point.
					w.mu.Lock()
					same := w.phase == c.Phase
					w.mu.Unlock()
					if same && c.Kind == "join" {
						w.Log.Info("the membership changed: restarting the phase from the coordinator's state", "phase", c.Phase, "at_step", c.From+1)
					} else {
						w.Log.Info("the next phase starts while the last one winds down here; stopping it", "phase", c.Phase)
					}
					if err := stopPhase(); err != nil {
						return err
					}
				}
				files, err := w.files(c.Spec)
				if err != nil {
					w.mu.Lock()
					w.state, w.err = "failed", err.Error()
					w.mu.Unlock()
					w.Log.Error("phase files", "error", err)
					continue
				}
				rep, err := NewReplica(w.NC, w.Secret, job, name, c.Phase, c.Spec.MicroShards, c.Gen, c.Members, w.Log.Named("replica"))
				if err != nil {
					return err
				}
				_ = rep.follow(c.Spec.SyncEvery) // a worker's subscribes to nothing more
				if w.setPeers(c) {
					rep.useDirect(w.peers, c.Plane)
				} else if c.Plane == PlanePeer {
					rep.Close()
					return errors.New("cluster: the job's data plane is peer-to-peer only, and this worker has none (--peer-listen off)")
				}
				rep.Start(c.Spec.StartStep)
				rep.SetShares(c.Shares)
				rep.joined = c.Kind == "join"
				w.mu.Lock()
				if w.rep != nil && w.phase == c.Phase {
					rep.carry(w.rep) // a restart: the phase's counts go on
				}
				w.closeReplicaLocked()
				w.rep, w.phase, w.state, w.err = rep, c.Phase, "training", ""
				w.mu.Unlock()
				if c.Kind == "join" {
					w.Log.Info("joining the running phase", "phase", c.Phase, "name", c.Spec.Name, "at_step", c.From+1, "workers", len(c.Members))
				} else {
					w.Log.Info("phase starting", "phase", c.Phase, "name", c.Spec.Name, "workers", len(c.Members))
				}
				phaseDone = make(chan error, 1)
				pctx, cancel := context.WithCancel(ctx)
				cancelPhase = cancel
				go func(spec PhaseSpec) {
					defer cancel()
					phaseDone <- w.Run(pctx, spec, files, rep)
				}(*c.Spec)
			}
		}
	}
}

// setPeers records the peers' addresses a control message carries, and
// says whether the job's data plane uses the worker's peer connections.
func (w *Worker) setPeers(c Control) bool {
	if w.peers == nil || c.Plane == PlaneNATS || c.Plane == "" {
		return false
	}
	w.peers.SetAddrs(c.Peers)
	w.peers.SetTLS(c.PeerTLS)
	return true
}

// closeReplicaLocked closes the phase's replica, if any, keeping its
// count of refused messages (w.mu held).
func (w *Worker) closeReplicaLocked() {
	if w.rep == nil {
		return
	}
	w.rep.Close()
	w.rejected.Add(w.rep.Stats().MessagesRejected)
	w.rep = nil
}

// control checks and decodes a control message: signed by the job's
// coordinator, newer than the last, of a known kind.
func (w *Worker) control(m *nats.Msg) (Control, error) {
	var c Control
	if err := w.l.check(m); err != nil {
		return c, err
	}
	if !w.ctlSeqs.newer(coordinatorName, m) {
		return c, errors.New("a control message replayed (not newer than the last)")
	}
	if err := json.Unmarshal(m.Data, &c); err != nil {
		return c, err
	}
	switch c.Kind {
	case "stop", "task", "gen", "register", "end", "phase", "join":
		w.ctlSeqs.record(coordinatorName, m)
		return c, nil
	}
	return c, fmt.Errorf("unknown kind %q", c.Kind)
}

// register announces the worker to the job's coordinator, waiting for one
// to answer — at most JobGoneAfter with giveUp (errJobGone).
func (w *Worker) register(ctx context.Context, prefix string, giveUp bool) error {
	start := time.Now()
	cores := runtime.NumCPU()
	h := Hello{Name: w.Name, Version: Version, Cores: cores, Device: w.Device, PID: os.Getpid()}
	if w.peers != nil {
		h.Peer = w.peers.Addr()
	}
	b, _ := json.Marshal(h)
	logged := false
	for {
		m, err := w.l.request(ctx, prefix+".join", b)
		if errors.Is(err, ErrBadMessage) {
			return fmt.Errorf("cluster: the coordinator's answer to the registration: %w (is this worker's job secret the job's?)", err)
		}
		if err == nil {
			var wl Welcome
			if err := json.Unmarshal(m.Data, &wl); err != nil {
				return fmt.Errorf("cluster: registration answer: %w", err)
			}
			if !wl.OK {
				return fmt.Errorf("cluster: the coordinator refused this worker: %s", wl.Error)
			}
			w.Log.Info("registered", "job", w.Job, "name", w.Name)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("cluster: register: %w", err)
		}
		if giveUp && time.Since(start) > JobGoneAfter {
			return errJobGone
		}
		if !logged {
			w.Log.Info("waiting for the coordinator", "job", w.Job)
			logged = true
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// Heartbeat is where the worker stands: what it tells the coordinator
// every HeartbeatEvery (and what its own metrics show).
func (w *Worker) Heartbeat() Heartbeat {
	w.mu.Lock()
	defer w.mu.Unlock()
	hb := Heartbeat{Name: w.Name, Phase: w.phase, State: w.state, Error: w.err, MessagesRejected: w.rejected.Load()}
	if w.rep != nil {
		st := w.rep.Stats()
		hb.MessagesRejected += st.MessagesRejected
		hb.Step, hb.BytesSent, hb.BytesReceived, hb.Shards, hb.ComputeSeconds = st.Steps, st.BytesSent, st.BytesReceived, st.Shards, st.ComputeSeconds
		hb.PeerBytesSent, hb.NATSBytesOut = st.PeerBytesSent, st.NATSBytesOut
		hb.StepSeconds, hb.WaitSeconds, hb.CPUSeconds = st.StepSeconds, st.WaitSeconds, st.CPUSeconds
		hb.DigestStep, hb.Digest = w.rep.lastDigest()
	}
	return hb
}

func (w *Worker) heartbeats(ctx context.Context, prefix string) {
	t := time.NewTicker(HeartbeatEvery)
	defer t.Stop()
	for {
		b, _ := json.Marshal(w.Heartbeat())
		_ = w.l.publish(prefix+".hb", nil, b)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// files fetches a phase's files from the job's object store.
func (w *Worker) files(spec *PhaseSpec) (map[string][]byte, error) {
	names := slices.Clone(spec.Teachers)
	if spec.Resume != "" {
		names = append(names, spec.Resume)
	}
	for _, n := range []string{spec.TeacherLogits, spec.PostTrained} {
		if n != "" {
			names = append(names, n)
		}
	}
	return w.fetch(spec.Bucket, names, spec.Data)
}

// fetch gets objects from the job's store and checks their signatures;
// the dataset's (data) are kept for the job's later phases and tasks.
func (w *Worker) fetch(bucket string, names, data []string) (map[string][]byte, error) {
	names = slices.Clone(names)
	out := map[string][]byte{}
	w.mu.Lock()
	for _, n := range data {
		if b, ok := w.cache[n]; ok { // the same job's dataset: fetched before
			out[n] = b
		} else {
			names = append(names, n)
		}
	}
	w.mu.Unlock()
	if len(names) == 0 {
		return out, nil
	}
	js, err := w.NC.JetStream()
	if err != nil {
		return nil, fmt.Errorf("cluster: JetStream: %w", err)
	}
	obs, err := js.ObjectStore(bucket)
	if err != nil {
		return nil, fmt.Errorf("cluster: object store %s: %w", bucket, err)
	}
	for _, n := range names {
		b, err := getObject(obs, bucket, w.Secret, n)
		if err != nil {
			return nil, err
		}
		out[n] = b
		if slices.Contains(data, n) {
			w.mu.Lock()
			if w.cache == nil {
				w.cache = map[string][]byte{}
			}
			w.cache[n] = b
			w.mu.Unlock()
		}
	}
	return out, nil
}
