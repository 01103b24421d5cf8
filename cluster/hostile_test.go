package cluster

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// FuzzDataPart: a data message's headers and body, whatever they hold,
// are refused or placed within the chunk they claim — never a panic, and
// nothing sized from the message beyond the vector the receiver runs.
func FuzzDataPart(f *testing.F) {
	md := meta{job: "job", phase: 1, gen: 2, step: 3, off: 8, n: 64}
	h := md.header()
	f.Add(h.Get(hPhase), h.Get(hGen), h.Get(hStep), h.Get(hOff), h.Get(hLen), encodeInt64s(nil, []int64{1, -2, 1 << 40}), true)
	f.Add(h.Get(hPhase), h.Get(hGen), h.Get(hStep), h.Get(hOff), h.Get(hLen), encodeFloat32s(nil, []float32{1, 2, 3}), false)
	f.Add("1", "2", "3", "0", "1099511627776", []byte{1, 2, 3, 4}, false)
	const running = 64 // the vector the receiver runs
	f.Fuzz(func(t *testing.T, phase, gen, step, off, n string, data []byte, partial bool) {
		h := nats.Header{}
		h.Set(hJob, "job")
		h.Set(hPhase, phase)
		h.Set(hGen, gen)
		h.Set(hStep, step)
		h.Set(hOff, off)
		h.Set(hLen, n)
		md, err := parseMeta(h)
		if err != nil || md.n != running || md.off < 0 || md.off >= md.n {
			return // refused by accept, or held unsized
		}
		var count int
		if partial {
			count, err = int64sCount(data)
		} else {
			count, err = float32sCount(data)
		}
		if err != nil {
			return
		}
		for j := range 3 {
			lo, hi := chunk(md.n, 3, j)
			a := &assembly{lo: lo, hi: hi, parts: map[int]bool{}, i64: make([]int64, hi-lo), f32: make([]float32, hi-lo)}
			err := a.place(md.off, count, func(at int) error {
				if partial {
					decodeInt64s(a.i64[at:at+count], data)
					return nil
				}
				return decodeFloat32s(a.f32[at:at+count], data)
			})
			if err == nil && (md.off < lo || md.off+count > hi) {
				t.Fatalf("part [%d, %d) placed in [%d, %d)", md.off, md.off+count, lo, hi)
			}
		}
	})
}

// TestWorkersWithoutTheSecretAreRefused: a worker without the job's
// secret, or with another, is refused at registration — its Serve returns
// the reason (the process exits non-zero) — and the coordinator names it
// in its refusals; a worker with the secret is admitted beside them.
func TestWorkersWithoutTheSecretAreRefused(t *testing.T) {
	_, conn := embedded(t)
	coord := newSignedCoordinator(t, conn, []byte("the job's secret"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	run := func(context.Context, PhaseSpec, map[string][]byte, *Replica) error { return nil }
	for _, tc := range []struct {
		name   string
		secret []byte
		want   string
	}{
		{"none", nil, "not signed"},
		{"wrong", []byte("a guess"), "does not match"},
	} {
		w := &Worker{Log: testLog(t, tc.name), NC: conn(tc.name), Job: "job", Name: tc.name, Device: "cpu", Secret: tc.secret, Run: run}
		err := w.Serve(ctx)
		if err == nil || !strings.Contains(err.Error(), "refused") && !strings.Contains(err.Error(), "signature") {
			t.Fatalf("worker with secret %q: %v", tc.secret, err)
		}
		t.Logf("worker %s: %v", tc.name, err)
	}
	good := &Worker{Log: testLog(t, "good"), NC: conn("good"), Job: "job", Name: "good", Device: "cpu", Secret: []byte("the job's secret"), Run: run}
	go func() { _ = good.Serve(ctx) }()
	if err := coord.WaitWorkers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	refused := coord.Stats().Refused
	for _, name := range []string{"none", "wrong"} {
		if !slices.ContainsFunc(refused, func(r Refusal) bool { return r.Name == name }) {
			t.Errorf("%s not among the refused: %+v", name, refused)
		}
	}
	if ws := coord.Workers(); len(ws) != 1 || ws[0].Name != "good" {
		t.Fatalf("workers %+v", ws)
	}
}

// FuzzControl: a worker's check of a control message — signature,
// sequence, JSON, kind — refuses or accepts any bytes without a panic, and
// accepts only the kinds it acts on.
func FuzzControl(f *testing.F) {
	secret := []byte("k")
	for _, c := range []Control{{Kind: "phase", Phase: 1, Members: []string{"w1"}, Spec: &PhaseSpec{Name: "p"}}, {Kind: "stop"}, {Kind: "gen", Gen: 3}} {
		b, _ := json.Marshal(c)
		f.Add(b, "2", true)
	}
	f.Fuzz(func(t *testing.T, data []byte, seq string, signed bool) {
		m := &nats.Msg{Subject: "lathe.job.c.ctl", Header: nats.Header{}, Data: data}
		l := newLink(nil, secret)
		if signed {
			l.sign(m)
		}
		m.Header.Set(hSeq, seq)
		w := &Worker{l: l}
		c, err := w.control(m)
		if err == nil && !slices.Contains([]string{"stop", "task", "gen", "register", "end", "phase", "join"}, c.Kind) {
			t.Fatalf("accepted kind %q", c.Kind)
		}
	})
}

// BenchmarkSign signs a data part of 1 MB (the payload limit's size), as
// every replica does for what it sends and checks for what it receives.
func BenchmarkSign(b *testing.B) {
	l := newLink(nil, []byte("the job's secret"))
	md := meta{job: "job", phase: 1, gen: 1, step: 7, n: 1 << 18}
	data := make([]byte, 1<<20)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		m := &nats.Msg{Subject: "lathe.job.w.w1.ag", Header: md.header(), Data: data}
		l.sign(m)
	}
}

// TestRefusedMessagesDoNotMoveTheReplayWindow: a signed message whose body
// or kind is refused — from a broken or hostile sender holding the secret,
// numbered far ahead — leaves the sequence window where it was, so the
// sender's next genuine message is not taken for a replay; a genuine
// message moves it, and its copy is then refused.
func TestRefusedMessagesDoNotMoveTheReplayWindow(t *testing.T) {
	secret := []byte("s")
	w := &Worker{l: newLink(nil, secret)}
	coord := newLink(nil, secret)
	ctl := func(body string, seq int64) *nats.Msg {
		m := &nats.Msg{Subject: "lathe.j.c.ctl", Header: nats.Header{}, Data: []byte(body)}
		m.Header.Set(hSeq, strconv.FormatInt(seq, 10))
		return Sign(m, secret)
	}
	now := coord.seq.Load()
	for _, bad := range []*nats.Msg{ctl(`{"kind":"explode"}`, now+1e12), ctl(`not json`, now+2e12)} {
		if _, err := w.control(bad); err == nil {
			t.Fatalf("accepted %s", bad.Data)
		}
	}
	good := coord.sign(&nats.Msg{Subject: "lathe.j.c.ctl", Data: []byte(`{"kind":"stop","phase":1}`)})
	if c, err := w.control(good); err != nil || c.Kind != "stop" {
		t.Fatalf("the genuine message after refused ones: %v", err)
	}
	if _, err := w.control(good); err == nil {
		t.Fatal("a copy of the genuine message was accepted")
	}
}
