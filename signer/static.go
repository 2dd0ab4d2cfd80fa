package signer

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// StaticKeySet is an in-memory KeySet: keys added by hand, one of them active. Promote switches
// the active key atomically: every Sign after Promote returns signs with the new key, and no Sign
// sees a half-done switch. Readers never block (an atomic load); writers are serialized and
// publish a new immutable snapshot with a fresh data timestamp.
type StaticKeySet struct {
	mu      sync.Mutex            // serializes writers
	signers map[string]SigningKey // by kid: the keys that may be promoted
	snap    atomic.Pointer[Snapshot]
}

var _ KeySet = (*StaticKeySet)(nil)

// NewStaticKeySet publishes active and every other signer, and signs with active.
func NewStaticKeySet(active crypto.Signer, others ...crypto.Signer) (*StaticKeySet, error) {
	s := &StaticKeySet{signers: map[string]SigningKey{}}
	snap := Snapshot{}
	for i, sg := range append([]crypto.Signer{active}, others...) {
		k, err := NewSigningKey(sg)
		if err != nil {
			return nil, fmt.Errorf("creating static key set: key %d: %w", i, err)
		}
		if _, dup := s.signers[k.KeyID()]; dup {
			return nil, fmt.Errorf("creating static key set: key %s given twice", k)
		}
		s.signers[k.KeyID()] = k
		snap.Published = append(snap.Published, PublishedKey{Public: k.Public()})
		if i == 0 {
			snap.Active = k
		}
	}
	snap.Updated = time.Now()
	s.snap.Store(&snap)
	return s, nil
}

// Snapshot returns the current keys; it never fails.
func (s *StaticKeySet) Snapshot(context.Context) (Snapshot, error) { return *s.snap.Load(), nil }

// Active is the kid that signs now.
func (s *StaticKeySet) Active() string { return s.snap.Load().Active.KeyID() }

// Promote makes the signer with kid the active key. It must have been given to NewStaticKeySet or
// Add.
func (s *StaticKeySet) Promote(kid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.signers[kid]
	if !ok {
		return fmt.Errorf("promoting %s: no signing key with that kid", kid)
	}
	s.update(func(snap *Snapshot) { snap.Active = k })
	return nil
}

// Add publishes another signing key, which Promote can then activate: a staged key. It returns
// the key's kid.
func (s *StaticKeySet) Add(sg crypto.Signer) (string, error) {
	k, err := NewSigningKey(sg)
	if err != nil {
		return "", fmt.Errorf("adding a key: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.published(k.KeyID()) {
		return "", fmt.Errorf("adding key %s: already published", k)
	}
	s.signers[k.KeyID()] = k
	s.update(func(snap *Snapshot) { snap.Published = append(snap.Published, PublishedKey{Public: k.Public()}) })
	return k.KeyID(), nil
}

// Publish adds a verification-only key (no private key: it can never be promoted), optionally
// excluded from kube-apiserver's OIDC discovery. It returns the key's kid.
func (s *StaticKeySet) Publish(pub crypto.PublicKey, excludeFromOIDCDiscovery bool) (string, error) {
	pk, err := keys.NewPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("publishing a key: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.published(pk.KeyID()) {
		return "", fmt.Errorf("publishing key %s: already published", pk)
	}
	s.update(func(snap *Snapshot) {
		snap.Published = append(snap.Published, PublishedKey{Public: pk, ExcludeFromOIDCDiscovery: excludeFromOIDCDiscovery})
	})
	return pk.KeyID(), nil
}

// Remove stops publishing kid. The active key cannot be removed.
func (s *StaticKeySet) Remove(kid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap.Load().Active.KeyID() == kid {
		return errors.New("removing the active key: promote another key first")
	}
	if !s.published(kid) {
		return fmt.Errorf("removing %s: not published", kid)
	}
	delete(s.signers, kid)
	s.update(func(snap *Snapshot) {
		snap.Published = slices.DeleteFunc(snap.Published, func(p PublishedKey) bool { return p.Public.KeyID() == kid })
	})
	return nil
}

// published reports whether kid is in the current snapshot. Callers hold mu.
func (s *StaticKeySet) published(kid string) bool {
	return slices.ContainsFunc(s.snap.Load().Published, func(p PublishedKey) bool { return p.Public.KeyID() == kid })
}

// update stores a modified copy of the snapshot with a new timestamp. Callers hold mu. The copy's
// Published slice is fresh, so snapshots handed out before stay unchanged.
func (s *StaticKeySet) update(change func(*Snapshot)) {
	next := *s.snap.Load()
	next.Published = slices.Clone(next.Published)
	change(&next)
	next.Updated = time.Now()
	s.snap.Store(&next)
}
