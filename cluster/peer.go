package cluster

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// The data plane is how a step's bulk bytes — the reduce-scatter's
// partial sums, the reduced and updated chunks — travel between the
// replicas of a phase (DESIGN §6). Everything else (membership,
// heartbeats, control, resend and fetch requests, tasks, the object
// store) goes through NATS whatever the plane.
const (
	// PlaneAuto sends over direct connections between the replicas, and
	// through NATS to a replica that cannot be reached (the default).
	PlaneAuto = "auto"
	// PlanePeer sends over direct connections only: a replica that
	// cannot be reached fails the step, with the reason.
	PlanePeer = "peer"
	// PlaneNATS sends everything through the NATS server.
	PlaneNATS = "nats"
)

// ParsePlane checks a data plane's name ("" is PlaneAuto).
func ParsePlane(s string) (string, error) {
	switch s {
	case "", PlaneAuto:
		return PlaneAuto, nil
	case PlanePeer, PlaneNATS:
		return s, nil
	}
	return "", fmt.Errorf("cluster: data plane %q: auto, peer or nats", s)
}

// PeerConfig is where a process's end of the peer data plane listens.
type PeerConfig struct {
	// Listen is the host:port the process listens on for its peers (""
	// is ":0": every interface, a port the system picks).
	Listen string
	// Advertise is the host, or host:port, the others dial ("": the
	// address this machine reaches the NATS server from, with the port
	// listened on).
	Advertise string
	// TLS encrypts the job's peer connections (a coordinator's setting,
	// sent to the workers with each phase): PeerTLSOn, PeerTLSOff, or
	// PeerTLSAuto ("") — on when the coordinator's NATS connection is.
	TLS string
}

// The settings of PeerConfig.TLS.
const (
	PeerTLSAuto = "auto"
	PeerTLSOn   = "on"
	PeerTLSOff  = "off"
)

// ParsePeerTLS checks a PeerConfig.TLS setting ("" is PeerTLSAuto).
func ParsePeerTLS(s string) (string, error) {
	switch s {
	case "", PeerTLSAuto:
		return PeerTLSAuto, nil
	case PeerTLSOn, PeerTLSOff:
		return s, nil
	}
	return "", fmt.Errorf("cluster: peer TLS %q: auto, on or off", s)
}

// PeerWriteTimeout bounds one frame's write to a peer: past it the
// connection is dropped and the frame goes through NATS (PlaneAuto), so a
// peer that stopped reading cannot stall its senders for good.
var PeerWriteTimeout = 10 * time.Second

// PeerRetryAfter is how long a peer that could not be reached is left on
// the NATS path before it is dialled again.
var PeerRetryAfter = 5 * time.Second

// maxFrame bounds a frame's body: a longer one ends the connection.
const maxFrame = 64 << 20

// peerMagic opens a connection; it names the protocol's version.
const peerMagic = "LATHEP1\n"

// Frame kinds: what the frame's data is, as the NATS subjects' last tokens.
const (
	frameRS byte = 1 + iota // a partial sum of the receiver's chunk (int64, narrow)
	frameAG                 // the sender's reduced chunk (float32), for the coordinator
	frameWG                 // the sender's updated chunk (float32), for the workers
	frameRF                 // a partial of the receiver's chunk that is one micro-shard's (float32)
)

var frameKinds = map[string]byte{"rs": frameRS, "ag": frameAG, "wg": frameWG, "rf": frameRF}

// isPartial says a part of kind holds partial sums of the receiver's chunk
// (reduce-scatter): fixed-point integers, or one micro-shard's float32
// values that the receiver converts to them.
func isPartial(kind byte) bool { return kind == frameRS || kind == frameRF }

// frameHead is a frame's fixed part: its body's length, kind and the
// data message's identity (the job is the connection's).
const frameHead = 4 + 1 + 5*8

// ErrPeerRefused is the error of a connection whose other end does not
// hold the job's secret, or is not the peer dialled.
var ErrPeerRefused = errors.New("cluster: peer refused")

// Peers is a process's end of the peer data plane for one job: it listens
// for the job's other replicas, dials them when it has frames for them,
// and hands what arrives to the current phase's replica. A connection
// carries frames one way, from the dialler; both ends prove they hold the
// job's secret before any frame passes (an HMAC-SHA256 challenge and
// response each way), so frames need no signature of their own. With TLS
// (SetTLS) the dialler encrypts: the listener answers TLS with a
// certificate made for the process, which nobody verifies — the proofs of
// the secret cover the session's exported keying material, so only the
// two ends of one TLS session can show them, and a relay between two
// sessions is refused. Safe for concurrent use.
type Peers struct {
	job, name string
	secret    []byte
	ln        net.Listener
	addr      string
	log       hclog.Logger
	dial      func(addr string) (net.Conn, error)

	sink // the phase's replica, none between phases (frames are dropped; their senders resend what is missing)

	mu     sync.Mutex
	addrs  map[string]string    // the peers' advertised addresses, by name
	out    map[string]*peerOut  // open connections to peers
	down   map[string]time.Time // peers not reached, until when NATS carries theirs
	in     map[net.Conn]bool    // accepted connections
	closed bool
	wg     sync.WaitGroup

	refused atomic.Int64 // connections refused for their credential
	broken  atomic.Int64 // connections dropped on a write error or timeout

	tls      atomic.Bool  // dial with TLS
	tlsIn    atomic.Int64 // connections accepted with TLS
	certOnce sync.Once
	cert     tls.Certificate
	certErr  error
}

// peerOut is a connection to a peer; mu serializes its frames.
type peerOut struct {
	mu    sync.Mutex
	c     net.Conn
	batch *batchConn // under TLS: what the frame's records go through, flushed after each
}

// batchConn gathers the records TLS writes — one a 16 KiB, each its own
// system call otherwise — and passes them on when flushed; until hold is
// set (the handshakes) every write goes straight through.
type batchConn struct {
	net.Conn
	w    *bufio.Writer
	hold bool
}

func (c *batchConn) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	if err == nil && !c.hold {
		err = c.w.Flush()
	}
	return n, err
}

// ListenPeers opens job's peer data plane for the replica called name
// (its subject token), authenticating peers with secret. natsURL is the
// NATS server's, to find the address the others reach this machine at
// when cfg names none.
func ListenPeers(job, name string, secret []byte, cfg PeerConfig, natsURL string, log hclog.Logger) (*Peers, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	listen := cfg.Listen
	if listen == "" {
		listen = ":0"
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("cluster: peer data plane: %w", err)
	}
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	addr := cfg.Advertise
	switch {
	case addr == "":
		addr = net.JoinHostPort(hostToward(natsURL, ln.Addr().(*net.TCPAddr)), port)
	case !hasPort(addr):
		addr = net.JoinHostPort(addr, port)
	}
	p := &Peers{job: Token(job), name: Token(name), secret: append([]byte(nil), secret...), ln: ln, addr: addr, log: log,
		addrs: map[string]string{}, out: map[string]*peerOut{}, down: map[string]time.Time{}, in: map[net.Conn]bool{}}
	p.dial = func(a string) (net.Conn, error) { return net.DialTimeout("tcp", a, 5*time.Second) }
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// hasPort says whether addr is host:port.
func hasPort(addr string) bool {
	_, _, err := net.SplitHostPort(addr)
	return err == nil
}

// hostToward is the host part of the address this machine reaches the
// NATS server at natsURL from (a loopback server: loopback), else the
// listener's own host when it is specific.
func hostToward(natsURL string, l *net.TCPAddr) string {
	if l.IP != nil && !l.IP.IsUnspecified() {
		return l.IP.String()
	}
	host := "127.0.0.1"
	if u, err := url.Parse(natsURL); err == nil && u.Hostname() != "" {
		port := u.Port()
		if port == "" {
			port = "4222"
		}
		// A UDP "connection" sends nothing: it only picks the route.
		if c, err := net.Dial("udp", net.JoinHostPort(u.Hostname(), port)); err == nil {
			host = c.LocalAddr().(*net.UDPAddr).IP.String()
			c.Close()
		}
	}
	return host
}

// Addr is the address the other replicas dial.
func (p *Peers) Addr() string { return p.addr }

// SetAddrs records the peers' addresses (a generation's, from the
// coordinator); a peer whose address changed is dialled afresh.
func (p *Peers) SetAddrs(addrs map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, a := range addrs {
		name = Token(name)
		if name == p.name {
			continue
		}
		if old, ok := p.addrs[name]; ok && old != a {
			if o := p.out[name]; o != nil {
				o.c.Close()
				delete(p.out, name)
			}
			delete(p.down, name)
		}
		p.addrs[name] = a
	}
}

// Close stops listening and closes every connection.
func (p *Peers) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.ln.Close()
	for _, o := range p.out {
		o.c.Close()
	}
	for c := range p.in {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// Refused counts the connections refused for their credential (either
// way); Broken those dropped on a write error or timeout.
func (p *Peers) Refused() int64 { return p.refused.Load() }

// Broken counts the connections dropped on a write error or timeout.
func (p *Peers) Broken() int64 { return p.broken.Load() }

// SetTLS says whether the connections this end dials from now on are
// encrypted (those open stay as they are).
func (p *Peers) SetTLS(on bool) { p.tls.Store(on) }

// bindingLabel names the TLS exporter whose keying material the proofs
// of a TLS connection cover.
const bindingLabel = "EXPORTER-lathe-peer-binding"

// binding is the keying material both ends of c's TLS session export.
func binding(c *tls.Conn) ([]byte, error) {
	cs := c.ConnectionState()
	return cs.ExportKeyingMaterial(bindingLabel, nil, 32)
}

// serverTLS is the listening end's TLS configuration, with a certificate
// made once for the process (ECDSA P-256, self-signed).
func (p *Peers) serverTLS() (*tls.Config, error) {
	p.certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			p.certErr = err
			return
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lathe peer " + p.name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			p.certErr = err
			return
		}
		p.cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	})
	if p.certErr != nil {
		return nil, fmt.Errorf("cluster: peer TLS certificate: %w", p.certErr)
	}
	return &tls.Config{Certificates: []tls.Certificate{p.cert}, MinVersion: tls.VersionTLS13}, nil
}

// clientTLS is the dialling end's: the certificate is not what
// authenticates the peer (the proofs bound to the session are), so it is
// not verified.
var clientTLS = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}

// send implements transport: one frame to each peer in to.
func (p *Peers) send(to []string, pt part) []string {
	var rest []string
	for _, name := range to {
		o, err := p.conn(name)
		if err == nil {
			err = o.write(pt.kind, pt.md, pt.data)
			if err != nil {
				p.drop(name, o, err)
			}
		}
		if err != nil {
			rest = append(rest, name)
		}
	}
	return rest
}

// conn is the open connection to name, dialled if need be.
func (p *Peers) conn(name string) (*peerOut, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errors.New("cluster: peer data plane closed")
	}
	if o := p.out[name]; o != nil {
		p.mu.Unlock()
		return o, nil
	}
	addr, ok := p.addrs[name]
	if until, down := p.down[name]; !ok || down && time.Now().Before(until) {
		p.mu.Unlock()
		return nil, fmt.Errorf("cluster: no peer address for %s", name)
	}
	p.mu.Unlock()
	c, err := p.dial(addr)
	var batch *batchConn
	if err == nil {
		c, batch, err = p.open(c, name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.down[name] = time.Now().Add(PeerRetryAfter)
		p.log.Warn("peer not reached: its data goes through NATS for now", "peer", name, "addr", addr, "error", err)
		return nil, err
	}
	if o := p.out[name]; o != nil || p.closed { // dialled at once by another sender
		c.Close()
		if o == nil {
			return nil, errors.New("cluster: peer data plane closed")
		}
		return o, nil
	}
	delete(p.down, name)
	o := &peerOut{c: c, batch: batch}
	p.out[name] = o
	p.log.Debug("peer connected", "peer", name, "addr", addr)
	return o, nil
}

// drop closes a connection that failed; the peer is dialled again at its
// next frame.
func (p *Peers) drop(name string, o *peerOut, err error) {
	p.broken.Add(1)
	o.c.Close()
	p.mu.Lock()
	if p.out[name] == o {
		delete(p.out, name)
	}
	p.mu.Unlock()
	p.log.Warn("peer connection dropped", "peer", name, "error", err)
}

// write sends one frame, within PeerWriteTimeout.
func (o *peerOut) write(kind byte, md meta, data []byte) error {
	var h [frameHead]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(frameHead-4+len(data)))
	h[4] = kind
	for i, v := range []uint64{md.phase, md.gen, uint64(md.step), uint64(md.off), uint64(md.n)} {
		binary.LittleEndian.PutUint64(h[5+8*i:], v)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	_ = o.c.SetWriteDeadline(time.Now().Add(PeerWriteTimeout))
	// Head and part in one gathered write, the part not copied first
	// (under TLS: records gathered, then one flush).
	bufs := net.Buffers{h[:], data}
	_, err := bufs.WriteTo(o.c)
	if err == nil && o.batch != nil {
		err = o.batch.w.Flush()
	}
	return err
}

// open starts TLS on a dialled connection when the job asks for it, and
// runs the handshake; it returns the connection frames go on (and, under
// TLS, the batching beneath it), or closes it.
func (p *Peers) open(c net.Conn, name string) (net.Conn, *batchConn, error) {
	var bind []byte
	var batch *batchConn
	if p.tls.Load() {
		batch = &batchConn{Conn: c, w: bufio.NewWriterSize(c, 256<<10)}
		tc := tls.Client(batch, clientTLS)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		err := tc.Handshake()
		if err == nil {
			bind, err = binding(tc)
		}
		if err != nil {
			c.Close()
			return nil, nil, fmt.Errorf("TLS with %s: %w", name, err)
		}
		c = tc
	}
	if err := p.handshake(c, name, bind); err != nil {
		c.Close()
		return nil, nil, err
	}
	if batch != nil {
		batch.hold = true
	}
	return c, batch, nil
}

// proof is the HMAC each end of a connection shows: of the role, the
// job, both names, both nonces and the TLS session's binding (none
// without TLS).
func (p *Peers) proof(role, from, to string, a, b, bind []byte) []byte {
	m := hmac.New(sha256.New, p.secret)
	for _, s := range []string{role, p.job, from, to} {
		m.Write([]byte(s))
		m.Write([]byte{0})
	}
	m.Write(a)
	m.Write(b)
	m.Write(bind)
	return m.Sum(nil)
}

// handshake opens a connection to the peer name: both prove they hold
// the job's secret.
func (p *Peers) handshake(c net.Conn, name string, bind []byte) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	a := make([]byte, 32)
	_, _ = rand.Read(a)
	hello := []byte(peerMagic)
	for _, s := range []string{p.job, p.name, name} {
		hello = binary.LittleEndian.AppendUint16(hello, uint16(len(s)))
		hello = append(hello, s...)
	}
	if _, err := c.Write(append(hello, a...)); err != nil {
		return err
	}
	reply := make([]byte, 32+sha256.Size)
	if _, err := io.ReadFull(c, reply); err != nil {
		return fmt.Errorf("%w: %s closed the connection (another job, or not the peer dialled): %v", ErrPeerRefused, name, err)
	}
	b, theirs := reply[:32], reply[32:]
	if !hmac.Equal(theirs, p.proof("listener", p.name, name, a, b, bind)) {
		p.refused.Add(1)
		return fmt.Errorf("%w: %s does not hold the job's secret (or a relay stands between)", ErrPeerRefused, name)
	}
	if _, err := c.Write(p.proof("dialler", p.name, name, a, b, bind)); err != nil {
		return err
	}
	ok := make([]byte, 1)
	if _, err := io.ReadFull(c, ok); err != nil || ok[0] != 1 {
		return fmt.Errorf("%w: %s refused this replica's credential", ErrPeerRefused, name)
	}
	return nil
}

// accept takes the peers' connections.
func (p *Peers) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.in[c] = true
		p.wg.Add(1)
		p.mu.Unlock()
		go func() {
			defer p.wg.Done()
			defer func() {
				c.Close()
				p.mu.Lock()
				delete(p.in, c)
				p.mu.Unlock()
			}()
			conn, from, err := p.serve(c)
			if err != nil {
				p.log.Warn("peer connection refused", "remote", c.RemoteAddr().String(), "error", err)
				return
			}
			if err := p.read(conn, from); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				p.log.Warn("peer connection ended", "peer", from, "error", err)
			}
		}()
	}
}

// peeked is a connection whose first bytes were read ahead into r.
type peeked struct {
	net.Conn
	r *bufio.Reader
}

func (c peeked) Read(b []byte) (int, error) { return c.r.Read(b) }

// serve is the listening end of open: TLS when the dialler starts it (a
// TLS record opens with 22, a plain connection with the magic), then
// answer. It returns the connection frames come on and the dialler's name.
func (p *Peers) serve(c net.Conn) (net.Conn, string, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	first, err := r.Peek(1)
	if err != nil {
		return nil, "", err
	}
	var conn net.Conn = peeked{c, r}
	var bind []byte
	if first[0] == 22 {
		cfg, err := p.serverTLS()
		if err != nil {
			return nil, "", err
		}
		tc := tls.Server(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, "", fmt.Errorf("TLS: %w", err)
		}
		if bind, err = binding(tc); err != nil {
			return nil, "", err
		}
		p.tlsIn.Add(1)
		conn = tc
	}
	from, err := p.answer(conn, bind)
	return conn, from, err
}

// answer is the listening end of handshake; it returns the dialler's name.
func (p *Peers) answer(c net.Conn, bind []byte) (string, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	magic := make([]byte, len(peerMagic))
	if _, err := io.ReadFull(c, magic); err != nil || string(magic) != peerMagic {
		return "", errors.New("not a lathe peer")
	}
	var fields [3]string
	for i := range fields {
		var n [2]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return "", err
		}
		s := make([]byte, binary.LittleEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, s); err != nil {
			return "", err
		}
		fields[i] = string(s)
	}
	job, from, to := fields[0], fields[1], fields[2]
	if job != p.job || to != p.name {
		return "", fmt.Errorf("%s dialled %s of job %s: this is %s of job %s", from, to, job, p.name, p.job)
	}
	a := make([]byte, 32)
	if _, err := io.ReadFull(c, a); err != nil {
		return "", err
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	if _, err := c.Write(append(b, p.proof("listener", from, p.name, a, b, bind)...)); err != nil {
		return "", err
	}
	theirs := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c, theirs); err != nil {
		return "", err
	}
	if !hmac.Equal(theirs, p.proof("dialler", from, p.name, a, b, bind)) {
		p.refused.Add(1)
		_, _ = c.Write([]byte{0})
		return "", fmt.Errorf("%w: %s does not hold the job's secret", ErrPeerRefused, from)
	}
	_, err := c.Write([]byte{1})
	return from, err
}

// read hands the frames from an accepted connection to the replica
// attached; a frame too long or of no known kind ends the connection.
func (p *Peers) read(c net.Conn, from string) error {
	r := bufio.NewReaderSize(c, 256<<10)
	var h [frameHead]byte
	var buf []byte
	for {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return err
		}
		size := int(binary.LittleEndian.Uint32(h[0:]))
		kind := h[4]
		if size < frameHead-4 || size-(frameHead-4) > maxFrame || kind < frameRS || kind > frameRF {
			return fmt.Errorf("a frame of kind %d and %d bytes: not one of this protocol", kind, size)
		}
		n := size - (frameHead - 4)
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		var v [5]uint64
		for i := range v {
			v[i] = binary.LittleEndian.Uint64(h[5+8*i:])
		}
		md := meta{job: p.job, phase: v[0], gen: v[1], step: int64(v[2]), off: int(int64(v[3])), n: int(int64(v[4]))}
		if rcv := p.get(); rcv != nil {
			rcv.deliver(from, part{kind: kind, md: md, data: buf})
		}
	}
}
