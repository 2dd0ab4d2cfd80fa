package signer

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// KeySet is the source of the keys the Server signs with and publishes.
type KeySet interface {
	// Snapshot returns a consistent view of the keys. It is called on every Sign and FetchKeys,
	// so it should be cheap (an atomic load of a snapshot built when the keys changed). An error
	// means no key can be used now; the caller gets codes.Unavailable.
	Snapshot(ctx context.Context) (Snapshot, error)
}

// Snapshot is the key data of one moment. Its slices must not be modified once returned.
type Snapshot struct {
	// Active signs every token. It must also be in Published and not excluded from discovery:
	// kube-apiserver refuses a signature by an excluded key, and a token signed by a key that is
	// not published could not be verified by anybody.
	Active SigningKey
	// Published are the keys kube-apiserver verifies with and publishes in its JWKS (except those
	// excluded from discovery). At least one; kids are unique.
	Published []PublishedKey
	// Updated is when this data last changed: FetchKeys' data_timestamp.
	Updated time.Time
}

// PublishedKey is a verification key as FetchKeys returns it.
type PublishedKey struct {
	Public keys.PublicKey
	// ExcludeFromOIDCDiscovery keeps the key out of kube-apiserver's JWKS while still verifying
	// tokens with it (legacy tokens); it must never sign.
	ExcludeFromOIDCDiscovery bool
}

// SigningKey is a private key together with the key ID and algorithm kube-apiserver expects for
// it. Its fields are unexported so that the kid and alg can only be the ones derived from the
// signer's own public key.
type SigningKey struct {
	signer crypto.Signer
	public keys.PublicKey
}

// NewSigningKey derives kid and alg from s.Public() with package keys: RSA (at least
// keys.MinRSABits) signs RS256, ECDSA P-256/P-384/P-521 signs ES256/ES384/ES512.
func NewSigningKey(s crypto.Signer) (SigningKey, error) {
	if s == nil {
		return SigningKey{}, errors.New("creating signing key: nil signer")
	}
	pub, err := keys.NewPublicKey(s.Public())
	if err != nil {
		return SigningKey{}, fmt.Errorf("creating signing key: %w", err)
	}
	return SigningKey{signer: s, public: pub}, nil
}

// KeyID is the kube-apiserver key ID of the key, the header's kid.
func (k SigningKey) KeyID() string { return k.public.KeyID() }

// Algorithm is the JWS algorithm, the header's alg.
func (k SigningKey) Algorithm() string { return k.public.Algorithm() }

// Public is the key's public half.
func (k SigningKey) Public() keys.PublicKey { return k.public }

// IsZero reports whether k holds no key.
func (k SigningKey) IsZero() bool { return k.signer == nil }

// String identifies the key in logs without revealing anything secret.
func (k SigningKey) String() string { return k.public.String() }

// check verifies the invariants documented on Snapshot, so that a faulty KeySet makes the signer
// refuse to sign rather than mint tokens nobody can verify.
func (s Snapshot) check() error {
	if len(s.Published) == 0 {
		return errors.New("no published keys")
	}
	if s.Updated.IsZero() {
		return errors.New("no data timestamp")
	}
	seen := make(map[string]bool, len(s.Published))
	for i, p := range s.Published {
		if p.Public.IsZero() {
			return fmt.Errorf("published key %d is empty", i)
		}
		kid := p.Public.KeyID()
		if seen[kid] {
			return fmt.Errorf("key %s is published twice", kid)
		}
		seen[kid] = true
	}
	if s.Active.IsZero() {
		return errors.New("no active key")
	}
	for _, p := range s.Published {
		if p.Public.KeyID() != s.Active.KeyID() {
			continue
		}
		if p.ExcludeFromOIDCDiscovery {
			return fmt.Errorf("active key %s is excluded from discovery", s.Active)
		}
		return nil
	}
	return fmt.Errorf("active key %s is not published", s.Active)
}
