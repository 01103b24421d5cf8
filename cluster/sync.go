package cluster

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/lathe-ml/lathe/trainer"
)

// A phase whose spec sets SyncEvery takes the coordinator off the step
// (trainer.Follower): the workers reduce and update among themselves, and
// only at sync points — every SyncEvery steps, each epoch's end, each
// checkpoint step — does the coordinator take their state: one worker's
// snapshot (parameters, masks, observers, quantizers, the policies' state
// and counters, in the checkpoint encoding a joiner gets) and each owner's
// chunk of the optimizer state. Both travel as requests to the coordinator
// (lathe.<job>.w.<name>.sync), one per part, each answered once the part
// is placed; a worker sends a part again until it is. A membership change
// (a worker lost, failed or joining) restarts every worker from the
// coordinator's state at its last sync point, as a joiner starts: the
// owners' optimizer state since then is gone with a lost owner, and exact
// arithmetic makes the replayed steps the same bits.

// DefaultSyncEvery is the spacing of sync points a cluster run uses unless
// told otherwise: the workers run up to DefaultSyncEvery + Window/2 steps
// past the coordinator's state, and a membership change computes that
// many again at most.
const DefaultSyncEvery = 64

// Headers of a sync part; its meta's step is the sync point's, its offset
// and length count bytes of the whole encoded blob.
const (
	hSync   = "Lathe-Sync"    // state or moments
	hSyncLo = "Lathe-Sync-Lo" // moments: the chunk [lo, hi) of the n-element reduced vector
	hSyncHi = "Lathe-Sync-Hi"
	hSyncN  = "Lathe-Sync-N"
	hLR     = "Lathe-LR" // state: the learning rate of the last step
)

// MaxSyncBlob bounds one encoded snapshot or chunk state a coordinator
// assembles.
const MaxSyncBlob = 1 << 30

// errSyncBusy answers a part of a sync point beyond those the coordinator
// holds at once (syncHeld): its sender sends it again a little later.
var errSyncBusy = errors.New("busy")

// syncHeldLocked is how many sync points' parts the coordinator holds at
// once: those of the steps workers may run ahead of it, and a few more
// (epochs' ends and checkpoints between).
func (r *Replica) syncHeldLocked() int {
	return int((int64(r.syncEvery)+Window/2)/int64(r.syncEvery)) + 4
}

// StateCodec turns a worker's snapshot into bytes (Encode, on the
// workers) and back (Decode, on the coordinator); the run layer's is the
// checkpoint encoding.
type StateCodec struct {
	Encode func(*trainer.Snapshot) ([]byte, error)
	Decode func([]byte) (*trainer.Snapshot, error)
}

// blob is an encoded snapshot or chunk state being assembled from parts.
type blob struct {
	b      []byte
	got    int
	placed map[int]int // offset → length of the parts placed
}

// place puts a part at off; a part placed before (a resend) is no error.
func (b *blob) place(off int, data []byte) error {
	if n, ok := b.placed[off]; ok {
		if n != len(data) {
			return fmt.Errorf("part at byte %d of %d bytes, placed before with %d", off, len(data), n)
		}
		return nil
	}
	if off < 0 || len(data) > len(b.b) || off > len(b.b)-len(data) || (len(data) == 0 && len(b.b) > 0) {
		return fmt.Errorf("part of %d bytes at byte %d of a %d-byte state", len(data), off, len(b.b))
	}
	for o, n := range b.placed {
		if off < o+n && o < off+len(data) {
			return fmt.Errorf("part [%d, %d) overlaps [%d, %d)", off, off+len(data), o, o+n)
		}
	}
	copy(b.b[off:], data)
	b.placed[off] = len(data)
	b.got += len(data)
	return nil
}

func (b *blob) complete() bool { return b.got == len(b.b) && len(b.placed) > 0 }

// chunkKey names one sender's optimizer state of [lo, hi) of an
// n-element vector.
type chunkKey struct {
	lo, hi, n int
	from      string
}

// syncPoint is what the coordinator holds of one sync point's state.
type syncPoint struct {
	states map[string]*blob // encoded snapshots by sender
	lr     map[string]float64
	chunks map[chunkKey]*blob
}

// SyncEvery implements trainer.Follower: the phase's spacing of sync
// points (0: the coordinator reduces every step).
func (r *Replica) SyncEvery() int { return r.syncEvery }

// Follows implements trainer.Follower: the coordinator's replica follows.
func (r *Replica) Follows() bool { return r.syncEvery > 0 && r.name == coordinatorName }

// SetStateCodec gives the replica the encoding of snapshots at sync points.
func (r *Replica) SetStateCodec(c StateCodec) {
	r.mu.Lock()
	r.codec = c
	r.mu.Unlock()
}

// DigestEvery is how often (in steps) this phase's replicas hash their
// weights after an update (trainer.DigestPolicy): DigestEvery, or 0 when
// the coordinator follows — it holds the weights only at sync points, so
// the replicas hash them there instead (Offer, Take), every sync point.
func (r *Replica) DigestEvery() int64 {
	if r.syncEvery > 0 {
		return 0
	}
	return DigestEvery
}

// follow makes the phase's replica one of a following phase: sync points
// every k steps; the coordinator's takes the workers' states.
func (r *Replica) follow(k int) error {
	r.syncEvery = k
	if r.name != coordinatorName || k <= 0 {
		return nil
	}
	r.syncs = map[int64]*syncPoint{}
	sub, err := r.nc.Subscribe("lathe."+r.job+".w.*.sync", r.onSync)
	if err != nil {
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	r.subs = append(r.subs, sub)
	if err := r.nc.Flush(); err != nil { // the server has it before any worker sends
		return fmt.Errorf("cluster: %w", err)
	}
	return nil
}

// Offer implements trainer.Follower on a worker: at a sync point it
// encodes its chunk's optimizer state and — one worker at each sync point,
// in turn — its snapshot, and returns while they are sent to the
// coordinator (sendOffers), in order; a state the coordinator refuses
// fails the worker's next step. It waits only while a sync point's parts
// before are still on their way.
func (r *Replica) Offer(ctx context.Context, st *trainer.SyncState) error {
	sn := st.Snapshot
	step := sn.Step
	// The weights the coordinator takes at this sync point: their digest
	// is compared with its own.
	r.SetDigest(step, trainer.ParamsDigest(sn.Params))
	r.mu.Lock()
	enc, n := r.codec.Encode, r.n
	r.mu.Unlock()
	_, members, _, _, _ := r.view(step - 1)
	var blobs []outgoing
	if len(members) > 0 && members[int(step/int64(r.syncEvery))%len(members)] == r.name {
		if enc == nil {
			return errors.New("cluster: no snapshot encoding (SetStateCodec)")
		}
		b, err := enc(sn)
		if err != nil {
			return err
		}
		h := nats.Header{}
		h.Set(hSync, "state")
		h.Set(hLR, strconv.FormatFloat(st.LR, 'g', -1, 64))
		blobs = append(blobs, outgoing{h, b})
	}
	if len(st.Chunks) == 0 {
		r.log.Warn("no current optimizer state of a chunk to offer at a sync point: the coordinator waits for a restart", "step", step)
	}
	for _, c := range st.Chunks {
		h := nats.Header{}
		h.Set(hSync, "moments")
		h.Set(hSyncLo, strconv.Itoa(c.Lo))
		h.Set(hSyncHi, strconv.Itoa(c.Hi))
		h.Set(hSyncN, strconv.Itoa(n))
		blobs = append(blobs, outgoing{h, float32Bytes(nil, c.Moments)})
	}
	r.mu.Lock()
	if r.offers == nil {
		// The sender lives as long as the replica: a phase's last state is
		// still on its way when the worker's trainer is done.
		octx, stop := context.WithCancel(context.Background())
		r.offers, r.offersStop = make(chan offered), stop
		go r.sendOffers(octx, r.offers)
	}
	offers := r.offers
	r.mu.Unlock()
	select {
	case offers <- offered{step, blobs}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// offered is one sync point's parts of a worker's state.
type offered struct {
	step  int64
	blobs []outgoing
}

// outgoing is one part of a sync point's state: its kind's headers and
// its bytes.
type outgoing struct {
	h    nats.Header
	data []byte
}

// sendOffers sends the offered states to the coordinator in order until
// ctx ends; a refusal is the replica's fault.
func (r *Replica) sendOffers(ctx context.Context, offers <-chan offered) {
	for {
		var o offered
		select {
		case <-ctx.Done():
			return
		case o = <-offers:
		}
		for _, b := range o.blobs {
			if err := r.sendBlob(ctx, o.step, b.h, b.data); err != nil {
				if ctx.Err() != nil {
					return
				}
				r.mu.Lock()
				if r.fault == nil {
					r.fault = err
				}
				r.mu.Unlock()
				r.poke()
				break
			}
		}
	}
}

// sendBlob sends data to the coordinator in parts, each until it is
// answered: "ok", or the reason it was refused.
func (r *Replica) sendBlob(ctx context.Context, step int64, h nats.Header, data []byte) error {
	per := int(r.nc.MaxPayload()) - 4096
	for off := 0; ; off += per {
		end := min(off+per, len(data))
		ph := nats.Header{}
		for k, v := range h {
			ph[k] = v
		}
		for k, v := range (meta{job: r.job, phase: r.phase, step: step, off: off, n: len(data)}).header() {
			ph[k] = v
		}
		for {
			actx, cancel := context.WithTimeout(ctx, ResendAfter)
			m, err := r.l.requestMsg(actx, r.prefix+".sync", ph, data[off:end])
			cancel()
			if err == nil && string(m.Data) == "ok" {
				break
			}
			if err == nil && string(m.Data) == errSyncBusy.Error() {
				select { // the coordinator holds as many sync points as it may
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(ResendAfter / 8):
				}
				continue
			}
			if err == nil {
				return fmt.Errorf("cluster: step %d: the coordinator refused the state: %s", step, m.Data)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.log.Debug("sending a sync part again", "step", step, "error", err)
		}
		r.mu.Lock()
		r.stats.BytesSent += int64(end - off)
		r.stats.BrokerBytesSent += int64(end - off)
		r.mu.Unlock()
		if end == len(data) {
			return nil
		}
	}
}

// onSync places a worker's part of a sync point's state (the
// coordinator's), and answers it.
func (r *Replica) onSync(m *nats.Msg) {
	from := subjectFrom(m.Subject)
	if err := r.l.check(m); err != nil {
		r.reject("sync state", from, err)
		return
	}
	err := r.placeSync(from, m)
	answer := "ok"
	if errors.Is(err, errSyncBusy) {
		_ = r.l.respond(m, nil, []byte(err.Error()))
		return
	}
	if err != nil {
		r.reject("sync state", from, err)
		answer = err.Error()
	}
	_ = r.l.respond(m, nil, []byte(answer))
	if err == nil {
		r.poke()
	}
}

// placeSync checks a sync part's identity against the replica's state
// and places it.
func (r *Replica) placeSync(from string, m *nats.Msg) error {
	md, err := parseMeta(m.Header)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	member := false
	for _, ms := range r.byGen {
		member = member || slices.Contains(ms, from)
	}
	ahead := int64(r.syncEvery) + Window
	switch {
	case md.job != r.job || md.phase != r.phase:
		return fmt.Errorf("job %q phase %d, not %q phase %d", md.job, md.phase, r.job, r.phase)
	case !member:
		return fmt.Errorf("%s is not a member of the phase", from)
	case md.step <= r.taken:
		return nil // taken already (a resend, or a restarted worker's replay)
	case md.step > r.taken+ahead:
		return fmt.Errorf("step %d, more than %d past the state taken (%d)", md.step, ahead, r.taken)
	case md.n < 0 || md.n > MaxSyncBlob:
		return fmt.Errorf("a state of %d bytes", md.n)
	}
	sp := r.syncs[md.step]
	if sp == nil {
		if len(r.syncs) >= r.syncHeldLocked() {
			return errSyncBusy
		}
		sp = &syncPoint{states: map[string]*blob{}, lr: map[string]float64{}, chunks: map[chunkKey]*blob{}}
		r.syncs[md.step] = sp
	}
	var b *blob
	switch m.Header.Get(hSync) {
	case "state":
		lr, err := strconv.ParseFloat(m.Header.Get(hLR), 64)
		if err != nil || math.IsNaN(lr) || math.IsInf(lr, 0) {
			return fmt.Errorf("learning rate %q", m.Header.Get(hLR))
		}
		if b = sp.states[from]; b == nil || len(b.b) != md.n {
			// A state of another size for a step the sender offered
			// before is a newer offer — it redid the step after a
			// membership change — and replaces the one before, whose
			// parts have all been answered (sendOffers sends in order).
			b = &blob{b: make([]byte, md.n), placed: map[int]int{}}
			sp.states[from], sp.lr[from] = b, lr
		}
	case "moments":
		lo, err1 := strconv.Atoi(m.Header.Get(hSyncLo))
		hi, err2 := strconv.Atoi(m.Header.Get(hSyncHi))
		n, err3 := strconv.Atoi(m.Header.Get(hSyncN))
		switch {
		case err1 != nil || err2 != nil || err3 != nil || lo < 0 || hi <= lo || hi > n:
			return fmt.Errorf("optimizer state of [%s, %s) of %s values", m.Header.Get(hSyncLo), m.Header.Get(hSyncHi), m.Header.Get(hSyncN))
		case md.n%4 != 0:
			return fmt.Errorf("optimizer state of %d bytes", md.n)
		}
		k := chunkKey{lo, hi, n, from}
		if b = sp.chunks[k]; b == nil {
			b = &blob{b: make([]byte, md.n), placed: map[int]int{}}
			sp.chunks[k] = b
		}
	default:
		return fmt.Errorf("a sync part of kind %q", m.Header.Get(hSync))
	}
	if len(b.b) != md.n {
		return fmt.Errorf("a part of a %d-byte state sent before as %d bytes", md.n, len(b.b))
	}
	if err := b.place(md.off, m.Data); err != nil {
		return err
	}
	r.stats.BytesReceived += int64(len(m.Data))
	return nil
}

// readyLocked returns a sync point's state when a snapshot and chunks
// that tile the vector are complete (r.mu held).
func (sp *syncPoint) readyLocked() (state []byte, lr float64, chunks []trainer.ChunkState, ok bool) {
	for from, b := range sp.states {
		if b.complete() {
			state, lr = b.b, sp.lr[from]
			break
		}
	}
	if state == nil {
		return nil, 0, nil, false
	}
	// Any complete chunks that tile [0, n) will do (every owner's state
	// of a range is the same bits), for any n a sender gave: the trainer
	// refuses a vector of another length.
	byLo := map[int][]chunkKey{}
	ns := map[int]bool{}
	for k, b := range sp.chunks {
		if b.complete() {
			byLo[k.lo] = append(byLo[k.lo], k)
			ns[k.n] = true
		}
	}
	for n := range ns {
		if chunks = tile(sp, byLo, n); chunks != nil {
			return state, lr, chunks, true
		}
	}
	return nil, 0, nil, false
}

// tile returns complete chunks of an n-element vector that cover it from
// 0, each starting where the one before ends (nil: none do).
func tile(sp *syncPoint, byLo map[int][]chunkKey, n int) []trainer.ChunkState {
	var chunks []trainer.ChunkState
	for at := 0; at < n; {
		var next *chunkKey
		for _, k := range byLo[at] {
			if k.n == n && (next == nil || k.hi > next.hi) {
				next = &k
			}
		}
		if next == nil {
			return nil
		}
		chunks = append(chunks, trainer.ChunkState{Lo: next.lo, Hi: next.hi, Moments: float32s(sp.chunks[*next].b)})
		at = next.hi
	}
	return chunks
}

// Take implements trainer.Follower on the coordinator: it waits until the
// workers have offered the state after step, and returns it — or
// trainer.ErrShareFirst when a membership change restarts them from the
// state the coordinator holds now. Meanwhile it serves that state's
// optimizer chunks (f.Moments) to workers that ask for them (FetchMoments:
// a rebuilt model moved their chunks).
func (r *Replica) Take(ctx context.Context, step int64, n int, f trainer.Step) (*trainer.SyncState, error) {
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	r.mu.Lock()
	r.moments, r.momentsN = f.Moments, n
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.moments = nil
		r.mu.Unlock()
	}()
	for {
		r.serveMoments(r.takenStep())
		r.mu.Lock()
		gen, failure, changed, taken, dec := r.gen, r.failure, r.changed, r.taken, r.codec.Decode
		members := r.byGen[gen]
		var state []byte
		var lr float64
		var chunks []trainer.ChunkState
		ok := false
		if sp := r.syncs[step]; sp != nil {
			state, lr, chunks, ok = sp.readyLocked()
		}
		r.mu.Unlock()
		switch {
		case len(members) == 0 && failure != "":
			return nil, fmt.Errorf("cluster: %s", failure)
		case r.joinAt.Load() == taken:
			return nil, trainer.ErrShareFirst
		case ok && dec == nil:
			return nil, errors.New("cluster: no snapshot decoding (SetStateCodec)")
		case ok:
			return r.took(step, state, lr, chunks, dec, start)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		case <-r.notify:
		case <-tick.C:
			// Again, every tick: a worker that missed the last
			// announcement (core NATS delivers at most once) would wait
			// for it while this waits for that worker's state.
			r.announce(taken)
		}
	}
}

// announce tells the workers the coordinator holds the state after step:
// they may run up to Window/2 (+ SyncEvery when it follows) steps past it.
func (r *Replica) announce(step int64) {
	h := meta{job: r.job, phase: r.phase, step: step, n: 1}.header()
	_ = r.l.publish(r.prefix+".at", h, nil)
}

// took decodes a sync point's state, drops what is held of it and of the
// sync points before, and tells the workers the coordinator moved on.
func (r *Replica) took(step int64, state []byte, lr float64, chunks []trainer.ChunkState, dec func([]byte) (*trainer.Snapshot, error), start time.Time) (*trainer.SyncState, error) {
	sn, err := dec(state)
	if err != nil {
		return nil, fmt.Errorf("cluster: the state at step %d: %w", step, err)
	}
	r.mu.Lock()
	for s := range r.syncs {
		if s <= step {
			delete(r.syncs, s)
		}
	}
	done := step - r.taken
	r.taken, r.curStep = step, step
	r.stats.WaitSeconds += time.Since(start).Seconds()
	r.paceLocked(done)
	r.mu.Unlock()
	r.steps.Store(step)
	r.SetDigest(step, trainer.ParamsDigest(sn.Params))
	r.announce(step)
	return &trainer.SyncState{Snapshot: sn, LR: lr, Chunks: chunks}, nil
}

// float32s reads little-endian float32 bytes.
func float32s(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
	}
	return out
}

var _ trainer.Follower = (*Replica)(nil)

// takenStep is the step of the state the coordinator holds: the last sync
// point it took (or the phase's first step).
func (r *Replica) takenStep() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.taken
}
