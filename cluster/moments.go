package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/lathe-ml/lathe/trainer"
)

// The optimizer state of a chunk travels only when a membership change
// gives a worker a chunk whose state it does not hold (each worker keeps
// its own chunk's): the worker asks the coordinator, whose replica keeps
// the whole state, for the state of that chunk at the step it is running;
// the coordinator answers from its trainer when it reaches that step (it
// lags behind the workers, never ahead of a step not yet reduced), while
// its replica waits for the step's chunks.

// momentsReq asks for the optimizer state of elements [Lo, Hi) of the
// vector as it stands before Step's update.
type momentsReq struct {
	Phase uint64 `json:"phase"`
	Step  int64  `json:"step"`
	Lo    int    `json:"lo"`
	Hi    int    `json:"hi"`
	reply string
	from  string
}

// errStepGone: the coordinator had completed the step when a worker asked
// for its state — the step's chunks exist, the worker takes those.
var errStepGone = errors.New("cluster: the step was completed")

// maxGone bounds how often a replica goes back for a completed step's
// chunks before it gives up.
const maxGone = 10

// goneHeader marks the coordinator's answer for a step it completed.
const goneHeader = "Lathe-Gone"

var _ trainer.MomentSource = (*Replica)(nil)

// FetchMoments implements trainer.MomentSource: it asks the coordinator
// (again every ResendAfter) until the whole answer is in.
func (r *Replica) FetchMoments(ctx context.Context, step int64, lo, hi int) ([]float32, error) {
	inbox := nats.NewInbox()
	sub, err := r.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)
	req, _ := json.Marshal(momentsReq{Phase: r.phase, Step: step, Lo: lo, Hi: hi})
	ask := func() error { return r.l.publishRequest(r.prefix+".moments", inbox, req) }
	if err := ask(); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	r.log.Debug("asking the coordinator for a chunk's optimizer state", "step", step+1, "lo", lo, "hi", hi)
	var parts vectorParts
	next := time.Now().Add(ResendAfter)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if time.Now().After(next) {
			_ = ask()
			next = time.Now().Add(ResendAfter)
		}
		m, err := sub.NextMsg(100 * time.Millisecond)
		if errors.Is(err, nats.ErrTimeout) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		if err := r.l.check(m); err != nil {
			r.reject("optimizer state", coordinatorName, err)
			continue
		}
		md, err := parseMeta(m.Header)
		if err != nil || md.job != r.job || md.phase != r.phase || md.step != step {
			continue
		}
		if m.Header.Get(goneHeader) != "" {
			return nil, errStepGone
		}
		done, err := parts.add(md, m.Data, 0, hi-lo) // the state of the parameters among them
		if err != nil {
			r.reject("optimizer state", coordinatorName, err)
			continue
		}
		r.mu.Lock()
		r.stats.BytesReceived += int64(len(m.Data))
		r.mu.Unlock()
		if done {
			return parts.v, nil
		}
	}
}

// maxMomentReqs bounds the requests waiting for the coordinator's trainer
// (a worker asks for one chunk at a time).
const maxMomentReqs = 256

// onMoments queues a worker's request for the coordinator's trainer.
func (r *Replica) onMoments(m *nats.Msg) {
	from := subjectFrom(m.Subject)
	var q momentsReq
	if err := r.l.check(m); err != nil {
		r.reject("optimizer state request", from, err)
		return
	}
	if err := json.Unmarshal(m.Data, &q); err != nil || m.Reply == "" {
		r.reject("optimizer state request", from, fmt.Errorf("a malformed request"))
		return
	}
	if q.Phase != r.phase {
		return
	}
	q.reply, q.from = m.Reply, from
	r.mu.Lock()
	var err error
	switch {
	case !slices.Contains(r.byGen[r.gen], from):
		err = fmt.Errorf("%s is not a member of generation %d", from, r.gen)
	case q.Step < r.curStep-Window || q.Step > r.curStep+Window+int64(r.syncEvery):
		err = fmt.Errorf("step %d, current %d", q.Step+1, r.curStep+1)
	case len(r.momentReqs) >= maxMomentReqs:
		err = fmt.Errorf("%d requests waiting already", len(r.momentReqs))
	default:
		r.momentReqs = append(r.momentReqs, q)
	}
	r.mu.Unlock()
	if err != nil {
		r.reject("optimizer state request", from, err)
		return
	}
	r.poke()
}

// serveMoments answers the requests for step from the running step's
// state (on the trainer's goroutine: the state does not change meanwhile),
// and those for earlier steps with errStepGone's mark; later ones wait.
func (r *Replica) serveMoments(step int64) {
	r.mu.Lock()
	if len(r.momentReqs) == 0 {
		r.mu.Unlock()
		return
	}
	var now, later []momentsReq
	for _, q := range r.momentReqs {
		if q.Step <= step {
			now = append(now, q)
		} else {
			later = append(later, q)
		}
	}
	r.momentReqs = later
	fn, n := r.moments, r.momentsN
	r.mu.Unlock()
	for _, q := range now {
		md := meta{job: r.job, phase: r.phase, step: q.Step}
		switch {
		case q.Step < step || fn == nil:
			h := md.header()
			h.Set(goneHeader, "1")
			_ = r.l.publish(q.reply, h, nil)
		case q.Lo < 0 || q.Lo >= q.Hi || q.Hi > n:
			r.reject("optimizer state request", q.from, fmt.Errorf("range [%d, %d) of a %d-element vector", q.Lo, q.Hi, n))
		default:
			v := fn(q.Lo, q.Hi)
			md.n = len(v)
			r.mu.Lock()
			r.stats.StateServed++
			r.mu.Unlock()
			r.log.Debug("serving a chunk's optimizer state", "to", q.from, "step", step+1, "lo", q.Lo, "hi", q.Hi, "values", len(v))
			r.answerFloat32s(q.reply, md, v)
		}
	}
}
