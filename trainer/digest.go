package trainer

import (
	"crypto/sha256"
	"encoding/hex"
	"unsafe"
)

// DigestPolicy hashes the parameters (SHA-256 of their float32 bytes, in
// Model.Params order) after every Every-th update and hands the hex digest
// to Publish with the number of steps done: replicas of a cluster, which
// must hold the same bits, compare theirs.
type DigestPolicy struct {
	Every   int64
	Publish func(step int64, digest string)
}

// Name implements Policy.
func (p *DigestPolicy) Name() string { return "digest" }

// AfterUpdate implements AfterUpdater.
func (p *DigestPolicy) AfterUpdate(s *State) error {
	step := s.Step + 1
	if p.Every <= 0 || step%p.Every != 0 {
		return nil
	}
	p.Publish(step, ParamsDigest(s.Params))
	return nil
}

// ParamsDigest is the hex SHA-256 of the parameters' float32 bytes.
func ParamsDigest(params [][]float32) string {
	h := sha256.New()
	for _, w := range params {
		if len(w) > 0 {
			h.Write(unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), 4*len(w)))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
