package doctor

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// jwksOf renders n distinct P-256 keys (fast to generate, unlike RSA) as a JWKS, each with a kid,
// and with legacy also every key again with "kid": "" as serve --legacy-empty-kid does.
func jwksOf(t testing.TB, n int, legacy bool) []byte {
	t.Helper()
	var set jose.JSONWebKeySet
	for i := range n {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: fmt.Sprintf("kid-%d", i), Algorithm: "ES256", Use: "sig"})
	}
	if legacy {
		for i := range n {
			copied := set.Keys[i]
			copied.KeyID = ""
			set.Keys = append(set.Keys, copied)
		}
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestJWKSKeysAWSLimit: AWS STS accepts at most 100 keys in a JWKS (spiffe/spire#4699); above it
// the jwks-keys check fails with the error STS returns and a fix, counting entries as STS does
// (legacy empty-kid copies included), and still hands the set to the token checks.
func TestJWKSKeysAWSLimit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		keys   int
		legacy bool
		want   Status
	}{
		{"one key", 1, false, Pass},
		{"exactly the limit", keys.AWSMaxJWKSKeys, false, Pass},
		{"one above the limit", keys.AWSMaxJWKSKeys + 1, false, Fail},
		{"legacy copies up to the limit", keys.AWSMaxJWKSKeys / 2, true, Pass},
		{"legacy copies push it above the limit", keys.AWSMaxJWKSKeys/2 + 1, true, Fail},
		{"5000 keys", 5000, false, Fail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &state{jwksRaw: jwksOf(t, tc.keys, tc.legacy), jwksFetched: true}
			r := checkJWKSKeys(context.Background(), s)
			if r.Status != tc.want {
				t.Fatalf("status %s (%.300s), want %s", r.Status, r.Detail, tc.want)
			}
			if s.keySet == nil {
				t.Error("the key set was not kept for the token checks")
			}
			if tc.want == Pass {
				return
			}
			entries := tc.keys
			if tc.legacy {
				entries *= 2
			}
			if !strings.Contains(r.Detail, fmt.Sprintf("%d keys, more than the 100", entries)) {
				t.Errorf("detail %q does not give the count and the limit", r.Detail)
			}
			if r.AWSError != ErrRetrieveKey {
				t.Errorf("AWS error %q, want %q", r.AWSError, ErrRetrieveKey)
			}
			if !strings.Contains(r.Fix, "at most 100 keys") || !strings.Contains(r.Fix, "--legacy-empty-kid") {
				t.Errorf("fix %q", r.Fix)
			}
		})
	}
}

// FuzzCheckJWKSKeys: the JWKS comes from whatever answers at the jwks_uri; no body may panic the
// check, and every body gets a verdict with a detail, a failure also an AWS error and a fix.
func FuzzCheckJWKSKeys(f *testing.F) {
	for _, seed := range [][]byte{[]byte(`{"keys":[]}`), []byte(`{}`), []byte(`[]`), []byte(`{"keys":[{"kty":"EC"}]}`)} {
		f.Add(seed)
	}
	f.Add(jwksOf(f, 2, false))
	f.Add(jwksOf(f, 1, true))
	f.Fuzz(func(t *testing.T, body []byte) {
		r := checkJWKSKeys(context.Background(), &state{jwksRaw: body, jwksFetched: true})
		switch r.Status {
		case Pass:
		case Fail:
			if r.AWSError == "" || r.Fix == "" {
				t.Fatalf("failure without AWS error or fix: %+v", r)
			}
		default:
			t.Fatalf("status %s for a fetched JWKS", r.Status)
		}
		if r.Detail == "" {
			t.Fatal("no detail")
		}
	})
}
