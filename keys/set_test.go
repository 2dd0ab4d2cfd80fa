package keys_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// ecKeys returns n distinct P-256 keys (cheap to generate), sorted by kid.
func ecKeys(t testing.TB, n int) []keys.PublicKey {
	t.Helper()
	var out []keys.PublicKey
	for range n {
		out = append(out, mustPublicKey(t, &mustEC(ecP256().Curve).PublicKey))
	}
	slices.SortFunc(out, func(a, b keys.PublicKey) int { return strings.Compare(a.KeyID(), b.KeyID()) })
	return out
}

func active(k keys.PublicKey) keys.Key    { return keys.Key{Public: k, Phase: keys.PhaseActive} }
func published(k keys.PublicKey) keys.Key { return keys.Key{Public: k, Phase: keys.PhasePublished} }
func staged(k keys.PublicKey) keys.Key    { return keys.Key{Public: k, Phase: keys.PhaseStaged} }
func previous(k keys.PublicKey) keys.Key  { return keys.Key{Public: k, Phase: keys.PhasePrevious} }

type kp struct {
	kid   string
	phase keys.Phase
}

func setContents(s keys.Set) []kp {
	var out []kp
	for _, k := range s.Keys() {
		out = append(out, kp{k.Public.KeyID(), k.Phase})
	}
	return out
}

func TestNewSet(t *testing.T) {
	k := ecKeys(t, 4) // k[0] < k[1] < k[2] < k[3] by kid
	id := func(i int) string { return k[i].KeyID() }
	tests := []struct {
		name string
		in   []keys.Key
		want []kp
	}{
		{"empty", nil, nil},
		{"zero keys ignored", []keys.Key{{}, {Phase: keys.PhaseActive}, published(keys.PublicKey{})}, nil},
		{"zero keys among real ones", []keys.Key{{}, published(k[1]), {Phase: keys.PhaseActive}}, []kp{{id(1), keys.PhasePublished}}},
		{"sorted by kid within a phase", []keys.Key{published(k[3]), published(k[0]), published(k[2]), published(k[1])},
			[]kp{{id(0), keys.PhasePublished}, {id(1), keys.PhasePublished}, {id(2), keys.PhasePublished}, {id(3), keys.PhasePublished}}},
		{"active before published", []keys.Key{published(k[0]), active(k[3]), published(k[1]), active(k[2])},
			[]kp{{id(2), keys.PhaseActive}, {id(3), keys.PhaseActive}, {id(0), keys.PhasePublished}, {id(1), keys.PhasePublished}}},
		{"dedup: active after published wins", []keys.Key{published(k[0]), active(k[0])}, []kp{{id(0), keys.PhaseActive}}},
		{"dedup: active before published wins", []keys.Key{active(k[0]), published(k[0])}, []kp{{id(0), keys.PhaseActive}}},
		{"dedup: same phase twice", []keys.Key{published(k[1]), published(k[1]), published(k[1])}, []kp{{id(1), keys.PhasePublished}}},
		{"dedup: many sources", []keys.Key{published(k[1]), active(k[0]), published(k[0]), published(k[1]), active(k[0])},
			[]kp{{id(0), keys.PhaseActive}, {id(1), keys.PhasePublished}}},
		{"lifecycle phases in rank order", []keys.Key{published(k[0]), previous(k[1]), staged(k[2]), active(k[3])},
			[]kp{{id(3), keys.PhaseActive}, {id(2), keys.PhaseStaged}, {id(1), keys.PhasePrevious}, {id(0), keys.PhasePublished}}},
		{"dedup: active beats staged (promoted, state not yet updated)", []keys.Key{staged(k[0]), active(k[0])}, []kp{{id(0), keys.PhaseActive}}},
		{"dedup: active beats previous (still in the signing Secret)", []keys.Key{previous(k[0]), active(k[0])}, []kp{{id(0), keys.PhaseActive}}},
		{"dedup: previous beats published (retained key in the bundle)", []keys.Key{published(k[1]), previous(k[1])}, []kp{{id(1), keys.PhasePrevious}}},
		{"dedup: staged beats previous", []keys.Key{previous(k[1]), staged(k[1])}, []kp{{id(1), keys.PhaseStaged}}},
		{"unknown phase loses to published and sorts last", []keys.Key{{Public: k[0], Phase: "retired"}, published(k[0]), {Public: k[1], Phase: "retired"}, published(k[2])},
			[]kp{{id(0), keys.PhasePublished}, {id(2), keys.PhasePublished}, {id(1), "retired"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := keys.NewSet(tc.in...)
			if got := setContents(s); !slices.Equal(got, tc.want) {
				t.Errorf("NewSet = %v, want %v", got, tc.want)
			}
			if s.Len() != len(tc.want) || len(s.KeyIDs()) != len(tc.want) {
				t.Errorf("Len %d, KeyIDs %v, want %d", s.Len(), s.KeyIDs(), len(tc.want))
			}
			for i, w := range tc.want {
				if s.KeyIDs()[i] != w.kid {
					t.Errorf("KeyIDs[%d] = %s, want %s", i, s.KeyIDs()[i], w.kid)
				}
			}
			// Every permutation of the input gives an equal set.
			rev := slices.Clone(tc.in)
			slices.Reverse(rev)
			if r := keys.NewSet(rev...); !r.Equal(s) {
				t.Errorf("reversed input gives %v", setContents(r))
			}
		})
	}
}

func TestNewSetDoesNotAliasInput(t *testing.T) {
	k := ecKeys(t, 2)
	in := []keys.Key{published(k[0])}
	s := keys.NewSet(in...)
	in[0] = active(k[1])
	if got := setContents(s); !slices.Equal(got, []kp{{k[0].KeyID(), keys.PhasePublished}}) {
		t.Errorf("set changed with its input: %v", got)
	}
}

func TestSetEqual(t *testing.T) {
	k := ecKeys(t, 3)
	base := keys.NewSet(active(k[0]), published(k[1]))
	tests := []struct {
		name  string
		other keys.Set
		want  bool
	}{
		{"same keys other order", keys.NewSet(published(k[1]), active(k[0])), true},
		{"same keys with duplicates", keys.NewSet(published(k[1]), active(k[0]), published(k[0]), keys.Key{}), true},
		{"phase differs", keys.NewSet(active(k[0]), active(k[1])), false},
		{"subset", keys.NewSet(active(k[0])), false},
		{"superset", keys.NewSet(active(k[0]), published(k[1]), published(k[2])), false},
		{"other key", keys.NewSet(active(k[0]), published(k[2])), false},
		{"empty", keys.Set{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := base.Equal(tc.other); got != tc.want {
				t.Errorf("Equal = %v, want %v", got, tc.want)
			}
			if got := tc.other.Equal(base); got != tc.want {
				t.Errorf("Equal is not symmetric")
			}
		})
	}
	if !(keys.Set{}).Equal(keys.NewSet()) || !(keys.Set{}).Equal(keys.NewSet(keys.Key{})) {
		t.Error("empty sets are not equal")
	}
}

func TestSetAlgorithms(t *testing.T) {
	r := mustPublicKey(t, &rsa2048A().PublicKey)
	r2 := mustPublicKey(t, &rsa2048B().PublicKey)
	p256 := ecKeys(t, 2)
	p384 := mustPublicKey(t, &ecP384().PublicKey)
	p521 := mustPublicKey(t, &ecP521().PublicKey)
	tests := []struct {
		name string
		in   []keys.Key
		want []string
	}{
		{"empty", nil, nil},
		{"one RSA", []keys.Key{active(r)}, []string{"RS256"}},
		{"unique", []keys.Key{active(r), published(r2), published(p256[0]), active(p256[1])}, []string{"ES256", "RS256"}},
		{"sorted", []keys.Key{active(r), published(p521), published(p384), published(p256[0])}, []string{"ES256", "ES384", "ES512", "RS256"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := keys.NewSet(tc.in...).Algorithms(); !slices.Equal(got, tc.want) {
				t.Errorf("Algorithms = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSetLookup(t *testing.T) {
	k := ecKeys(t, 3)
	s := keys.NewSet(published(k[0]), active(k[1]), published(k[1]))
	if got, ok := s.Lookup(k[1].KeyID()); !ok || got.Phase != keys.PhaseActive || !got.Public.Equal(k[1]) {
		t.Errorf("Lookup(k1) = %v, %v", got, ok)
	}
	if got, ok := s.Lookup(k[0].KeyID()); !ok || got.Phase != keys.PhasePublished || !got.Public.Equal(k[0]) {
		t.Errorf("Lookup(k0) = %v, %v", got, ok)
	}
	for _, kid := range []string{k[2].KeyID(), "", "nope"} {
		if got, ok := s.Lookup(kid); ok || !got.Public.IsZero() {
			t.Errorf("Lookup(%q) = %v, %v", kid, got, ok)
		}
	}
	if _, ok := (keys.Set{}).Lookup(""); ok {
		t.Error("zero Set finds a key")
	}
}
