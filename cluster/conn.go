package cluster

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Auth is how a client proves itself to NATS. Secrets come from files or
// the environment (the command line would show them to every user of the
// machine): Token and Password are the values, read by the caller.
type Auth struct {
	Token          string
	User, Password string
	CredsFile      string // a .creds file (JWT and NKey seed)
	NKeyFile       string // an NKey seed file
	CA             string // PEM file of the CA that signed the server's certificate
	Cert, Key      string // client certificate and key (mutual TLS)
}

// SecretFrom reads a secret from a file (path non-empty) or from the
// environment variable env; surrounding blanks are dropped.
func SecretFrom(path, env string) (string, error) {
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("cluster: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return strings.TrimSpace(os.Getenv(env)), nil
}

// Connect connects to url as name. Local workers of an embedded server do
// not reconnect (the server dies with the coordinator, and they with it);
// others reconnect for as long as it takes. extra options come last (a
// worker passes nats.NoEcho: it reads the all-gather subject it publishes
// on, and its own chunks coming back would only cost the server and it a
// copy of every one).
func Connect(url string, a Auth, name string, reconnect bool, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name(name), nats.Timeout(10 * time.Second), nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(4)}
	if reconnect {
		opts = append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(500*time.Millisecond))
	} else {
		opts = append(opts, nats.NoReconnect())
	}
	switch {
	case a.Token != "":
		opts = append(opts, nats.Token(a.Token))
	case a.User != "":
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	}
	if a.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	}
	if a.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(a.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: nkey %s: %w", a.NKeyFile, err)
		}
		opts = append(opts, o)
	}
	if a.CA != "" {
		opts = append(opts, nats.RootCAs(a.CA))
	}
	if a.Cert != "" || a.Key != "" {
		if a.Cert == "" || a.Key == "" {
			return nil, errors.New("cluster: a client certificate needs both --tls-cert and --tls-key")
		}
		opts = append(opts, nats.ClientCert(a.Cert, a.Key))
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("cluster: connect to %s: %w", url, err)
	}
	return nc, nil
}

// Token makes a name usable as one subject token.
func Token(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', '*', '>', ' ', '\t', '\n', '\r':
			return '_'
		}
		return r
	}, s)
}
