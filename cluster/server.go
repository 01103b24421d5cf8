package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Embedded is a nats-server inside the coordinator's process: loopback
// only, a random port, JetStream storage in the run directory, and a
// per-run random token that every client must present.
type Embedded struct {
	srv   *server.Server
	URL   string
	Token string
}

// StartEmbedded starts an embedded server storing JetStream data under
// storeDir.
func StartEmbedded(storeDir string) (*Embedded, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("cluster: token: %w", err)
	}
	if err := os.MkdirAll(storeDir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	token := hex.EncodeToString(b)
	srv, err := server.NewServer(&server.Options{
		ServerName:    "lathe-embedded",
		Host:          "127.0.0.1",
		Port:          server.RANDOM_PORT,
		Authorization: token,
		JetStream:     true,
		StoreDir:      storeDir,
		NoSigs:        true,
		NoLog:         true,
		MaxPayload:    4 << 20,
		// Workers starved of CPU read slowly: give them room before the
		// server calls them slow consumers.
		MaxPending:    256 << 20,
		WriteDeadline: 30 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: embedded nats-server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(20 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("cluster: embedded nats-server did not start within 20 s")
	}
	return &Embedded{srv: srv, URL: srv.ClientURL(), Token: token}, nil
}

// Shutdown stops the server.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
