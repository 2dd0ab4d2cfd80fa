package keys

import (
	"slices"
	"strings"
)

// Phase is where a key stands in its lifecycle, which decides whether and in what order it is
// published.
type Phase string

const (
	// PhaseActive keys sign tokens: their source holds the private key.
	PhaseActive Phase = "active"
	// PhaseStaged keys are published ahead of signing, so that relying parties have them cached by
	// the time they are promoted to active (see package lifecycle).
	PhaseStaged Phase = "staged"
	// PhasePrevious keys no longer sign but are published until the tokens they signed have
	// expired and relying parties' caches have caught up (see package lifecycle).
	PhasePrevious Phase = "previous"
	// PhasePublished keys are published for verification only: their source lists the public key
	// (a verification bundle, a kubeadm sa.pub) and nothing says they sign.
	PhasePublished Phase = "published"
)

// rank orders phases in the rendered JWKS and decides which phase wins when two sources report
// the same key: active, staged, previous, published, then anything else.
func (p Phase) rank() int {
	switch p {
	case PhaseActive:
		return 0
	case PhaseStaged:
		return 1
	case PhasePrevious:
		return 2
	case PhasePublished:
		return 3
	}
	return 4
}

// Key is a public key in a given lifecycle phase.
type Key struct {
	Public PublicKey
	Phase  Phase
}

// Set is an immutable, deduplicated, deterministically ordered set of keys: by phase (active
// first), then by key ID. The zero Set is empty.
type Set struct {
	keys []Key
}

// NewSet builds a Set. A key reported more than once (by several sources, or as both private and
// public key of one source) appears once, in its highest-ranked phase. Zero keys are ignored.
func NewSet(keys ...Key) Set {
	byKID := make(map[string]Key, len(keys))
	for _, k := range keys {
		if k.Public.IsZero() {
			continue
		}
		prev, seen := byKID[k.Public.KeyID()]
		if !seen || k.Phase.rank() < prev.Phase.rank() {
			byKID[k.Public.KeyID()] = k
		}
	}
	out := make([]Key, 0, len(byKID))
	for _, k := range byKID {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b Key) int {
		if d := a.Phase.rank() - b.Phase.rank(); d != 0 {
			return d
		}
		return strings.Compare(a.Public.KeyID(), b.Public.KeyID())
	})
	return Set{keys: out}
}

// Keys returns the keys in publication order. The caller must not modify the slice.
func (s Set) Keys() []Key { return s.keys }

// Len is the number of keys.
func (s Set) Len() int { return len(s.keys) }

// KeyIDs lists the key IDs in publication order.
func (s Set) KeyIDs() []string {
	ids := make([]string, len(s.keys))
	for i, k := range s.keys {
		ids[i] = k.Public.KeyID()
	}
	return ids
}

// Lookup finds a key by ID.
func (s Set) Lookup(kid string) (Key, bool) {
	for _, k := range s.keys {
		if k.Public.KeyID() == kid {
			return k, true
		}
	}
	return Key{}, false
}

// Algorithms lists the distinct JWS algorithms of the keys, sorted, as kube-apiserver advertises
// them in id_token_signing_alg_values_supported.
func (s Set) Algorithms() []string {
	var algs []string
	for _, k := range s.keys {
		if !slices.Contains(algs, k.Public.Algorithm()) {
			algs = append(algs, k.Public.Algorithm())
		}
	}
	slices.Sort(algs)
	return algs
}

// Equal reports whether both sets hold the same keys in the same phases.
func (s Set) Equal(o Set) bool {
	return slices.EqualFunc(s.keys, o.keys, func(a, b Key) bool {
		return a.Phase == b.Phase && a.Public.Equal(b.Public)
	})
}
