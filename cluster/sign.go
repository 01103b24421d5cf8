package cluster

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
)

// Objects the coordinator puts in the job's store (datasets, teachers'
// model files, checkpoints to resume from) carry, in their description, an
// HMAC-SHA256 of their name and bytes keyed by the job's secret: a worker
// with the secret accepts only what this job's coordinator wrote, so the
// store's integrity is also authenticity.
const macPrefix = "lathe-hmac-sha256:"

// ErrBadSignature wraps every object a worker refuses for its signature.
var ErrBadSignature = errors.New("cluster: object signature")

// objectMAC is the description an object gets: the MAC of its name and
// bytes under secret ("" without a secret).
func objectMAC(secret []byte, name string, b []byte) string {
	if len(secret) == 0 {
		return ""
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(name))
	m.Write([]byte{0})
	m.Write(b)
	return macPrefix + hex.EncodeToString(m.Sum(nil))
}

// checkObject verifies an object's description against its bytes: with a
// secret, it must carry the right MAC; without one, it must carry none
// (a signed job needs its secret).
func checkObject(secret []byte, name, desc string, b []byte) error {
	signed := strings.HasPrefix(desc, macPrefix)
	switch {
	case len(secret) == 0 && signed:
		return fmt.Errorf("%w: %s is signed with the job's secret, which this worker was not given (--job-secret-file or $LATHE_JOB_SECRET)", ErrBadSignature, name)
	case len(secret) == 0:
		return nil
	case !signed:
		return fmt.Errorf("%w: %s carries no signature, and this worker accepts only objects signed with the job's secret", ErrBadSignature, name)
	case !hmac.Equal([]byte(desc), []byte(objectMAC(secret, name, b))):
		return fmt.Errorf("%w: %s does not match its signature: not written by this job's coordinator, or altered since", ErrBadSignature, name)
	}
	return nil
}

// putObject stores b under name, signed with secret.
func putObject(obs nats.ObjectStore, secret []byte, name string, b []byte) error {
	if _, err := obs.Put(&nats.ObjectMeta{Name: name, Description: objectMAC(secret, name, b)}, bytes.NewReader(b)); err != nil {
		return fmt.Errorf("cluster: object store: put %s: %w", name, err)
	}
	return nil
}

// getObject reads the object name and checks its signature against secret.
func getObject(obs nats.ObjectStore, bucket string, secret []byte, name string) ([]byte, error) {
	b, err := obs.GetBytes(name)
	if err != nil {
		return nil, fmt.Errorf("cluster: object store %s: get %s: %w", bucket, name, err)
	}
	info, err := obs.GetInfo(name)
	if err != nil {
		return nil, fmt.Errorf("cluster: object store %s: info %s: %w", bucket, name, err)
	}
	if err := checkObject(secret, name, info.Description, b); err != nil {
		return nil, err
	}
	return b, nil
}
