package lifecycle

import (
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// NewSignerState is a fresh signer-mode state whose one key, active from now, is the given PEM
// private key (kubeadm's sa.key, a Cluster API tls.key: its kid is the one kube-apiserver computed
// for it, so tokens it signed before the migration stay valid) or, with privatePEM empty, a new key
// for alg. The state gets a new random ID and generation 1.
func NewSignerState(privatePEM []byte, alg string, now time.Time) (*State, error) {
	var rec Record
	if len(privatePEM) == 0 {
		r, err := NewStagedRecord(alg, now)
		if err != nil {
			return nil, err
		}
		rec = r
	} else {
		signer, err := parsePrivateKey(privatePEM)
		if err != nil {
			return nil, fmt.Errorf("%w: importing the private key: %w", ErrInvalid, err)
		}
		pub, err := keys.NewPublicKey(signer.Public())
		if err != nil {
			return nil, fmt.Errorf("%w: importing the private key: %w", ErrInvalid, err)
		}
		rec = Record{KID: pub.KeyID(), Algorithm: pub.Algorithm(), Public: pub, Created: now, private: secretPEM(slices.Clone(privatePEM))}
	}
	rec.Phase, rec.Promoted = keys.PhaseActive, now
	id, err := newStateID()
	if err != nil {
		return nil, err
	}
	s := &State{Signer: true, ID: id, Generation: 1, KeysChanged: now, Keys: []Record{rec}}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return s, nil
}

func newStateID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a state id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Active is the one active record of a signer-mode state.
func (s *State) Active() (Record, bool) {
	for _, r := range s.Keys {
		if r.Phase == keys.PhaseActive {
			return r, true
		}
	}
	return Record{}, false
}

// PromoteSigner promotes the staged key kid in a signer-mode state, in one step: it becomes the
// active key (keeping its private key: it signs from now on), and the active key becomes previous
// without its private key, published until now + hold. hold must cover the retention and the time
// the signers take to notice (their refresh): the outgoing key may sign until then. The checks are
// StartPromote's: only a staged key, and not before the publish lead unless force.
func (s *State) PromoteSigner(kid string, now time.Time, lead, hold time.Duration, force bool) ([]Transition, error) {
	if !s.Signer {
		return nil, errors.New("promoting in one step needs a signer-mode state")
	}
	if _, err := s.StartPromote(kid, now, lead, force); err != nil {
		return nil, err
	}
	var out []Transition
	for i := range s.Keys {
		r := &s.Keys[i]
		switch {
		case r.KID == kid:
			r.Phase, r.Promoted, r.Promoting = keys.PhaseActive, now, time.Time{}
			out = append(out, Transition{KID: r.KID, From: keys.PhaseStaged, To: keys.PhaseActive})
		case r.Phase == keys.PhaseActive:
			r.Phase, r.Retired, r.PublishUntil, r.private = keys.PhasePrevious, now, now.Add(hold), nil
			out = append(out, Transition{KID: r.KID, From: keys.PhaseActive, To: keys.PhasePrevious})
		}
	}
	s.sort()
	return out, nil
}

// PrivateSigner parses the record's private key (staged keys, and the active key of a
// signer-mode state). The key never leaves memory except into the state document.
func (r Record) PrivateSigner() (crypto.Signer, error) {
	if len(r.private) == 0 {
		return nil, fmt.Errorf("key %s has no private key in the state", r.KID)
	}
	signer, err := parsePrivateKey(r.private)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", r.KID, err)
	}
	return signer, nil
}

// keysFingerprint identifies what the signer publishes and signs with: each kid and its phase.
func (s *State) keysFingerprint() string {
	var b strings.Builder
	for _, r := range s.Keys {
		b.WriteString(r.KID)
		b.WriteByte(':')
		b.WriteString(string(r.Phase))
		b.WriteByte(';')
	}
	return b.String()
}

// nextSignerGeneration stamps a signer-mode state about to be written over prev: one generation
// more, and the key-change time when the keys changed.
func (s *State) nextSignerGeneration(prev *State, now time.Time) {
	if !s.Signer {
		return
	}
	s.Generation = max(s.Generation, prev.Generation) + 1
	if s.keysFingerprint() != prev.keysFingerprint() || s.KeysChanged.IsZero() {
		s.KeysChanged = now
	}
}

// empty is the state of a missing or empty state Secret.
func (s *State) empty() bool {
	return !s.Signer && len(s.Keys) == 0 && s.SigningSecret == "" && s.Signing.At.IsZero()
}

// CanSign reports whether the record holds what signs: its private key, or a KMS key.
func (r Record) CanSign() bool { return len(r.private) > 0 || r.KMSKey != "" }

// NewKMSRecord is a staged record for a key held in AWS KMS (arn), whose public half is pub.
func NewKMSRecord(arn string, pub crypto.PublicKey, now time.Time) (Record, error) {
	if err := validKMSKeyARN(arn); err != nil {
		return Record{}, err
	}
	pk, err := keys.NewPublicKey(pub)
	if err != nil {
		return Record{}, fmt.Errorf("KMS key %s: %w", arn, err)
	}
	return Record{KID: pk.KeyID(), Phase: keys.PhaseStaged, Algorithm: pk.Algorithm(), Public: pk, Created: now, KMSKey: arn}, nil
}

// validKMSKeyARN accepts arn:PARTITION:kms:REGION:ACCOUNT:key/ID, bounded.
func validKMSKeyARN(arn string) error {
	parts := strings.SplitN(arn, ":", 6)
	if len(arn) > 2048 || len(parts) != 6 || parts[0] != "arn" || parts[2] != "kms" || !strings.HasPrefix(parts[5], "key/") || strings.ContainsAny(arn, " \t\r\n") {
		return fmt.Errorf("kmsKey %.80q is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)", arn)
	}
	return nil
}
