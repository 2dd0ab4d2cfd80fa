package lifecycle

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// docWith renders a document from raw records, bypassing MarshalDocument's checks, so tests can
// build invalid ones.
func docWith(t *testing.T, version any, recs ...map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"version": version, "keys": recs})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rawRecord(r Record, phase keys.Phase) map[string]any {
	m := map[string]any{
		"kid": r.KID, "phase": phase, "algorithm": r.Algorithm, "publicKey": string(r.Public.PEM()),
		"created": t0.Format(time.RFC3339),
	}
	if phase == keys.PhaseStaged {
		m["privateKey"] = string(r.private)
	}
	if phase == keys.PhasePrevious {
		m["publishUntil"] = t0.Add(time.Hour).Format(time.RFC3339)
	}
	return m
}

func with(m map[string]any, kv ...any) map[string]any {
	c := map[string]any{}
	for k, v := range m {
		c[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(c, kv[i].(string))
		} else {
			c[kv[i].(string)] = kv[i+1]
		}
	}
	return c
}

func TestParseDocument(t *testing.T) {
	k := testKeys(t)
	k1, k2, k3 := k["K1"], k["K2"], k["K3"]
	good := []map[string]any{rawRecord(k1, keys.PhaseActive), rawRecord(k2, keys.PhaseStaged), rawRecord(k3, keys.PhasePrevious)}
	tests := []struct {
		name    string
		doc     []byte
		wantErr string // substring; "" means valid
	}{
		{name: "empty input is the empty state", doc: nil},
		{name: "whitespace is the empty state", doc: []byte(" \n")},
		{name: "valid", doc: docWith(t, 1, good...)},
		{name: "no keys", doc: []byte(`{"version":1,"keys":[]}`)},
		{name: "not JSON", doc: []byte(`{"version":`), wantErr: "not JSON"},
		{name: "no version", doc: []byte(`{"keys":[]}`), wantErr: "no version"},
		{name: "newer version", doc: docWith(t, 2), wantErr: "newer kube-oidc-issuer"},
		{name: "version 0", doc: docWith(t, 0), wantErr: "unsupported version"},
		{name: "unknown field", doc: []byte(`{"version":1,"keys":[],"extra":true}`), wantErr: "unknown field"},
		{name: "trailing data", doc: []byte(`{"version":1,"keys":[]} {}`), wantErr: "syntax error"},
		{name: "unknown phase", doc: docWith(t, 1, with(good[0], "phase", "retired")), wantErr: `phase "retired"`},
		{name: "kid mismatch", doc: docWith(t, 1, with(good[0], "kid", k2.KID)), wantErr: "kid does not match"},
		{name: "algorithm mismatch", doc: docWith(t, 1, with(good[0], "algorithm", "RS256")), wantErr: "algorithm"},
		{name: "private key as public key", doc: docWith(t, 1, with(good[0], "publicKey", string(k1.private))), wantErr: "one PUBLIC KEY"},
		{name: "two public keys", doc: docWith(t, 1, with(good[0], "publicKey", string(k1.Public.PEM())+string(k2.Public.PEM()))), wantErr: "holds 2 keys"},
		{name: "private key on an active key", doc: docWith(t, 1, with(good[0], "privateKey", string(k1.private))), wantErr: "must not carry a private key"},
		{name: "staged key without private key", doc: docWith(t, 1, with(good[1], "privateKey", nil)), wantErr: "needs its private key"},
		{name: "private key of another key", doc: docWith(t, 1, with(good[1], "privateKey", string(k3.private))), wantErr: "does not match publicKey"},
		{name: "garbage private key", doc: docWith(t, 1, with(good[1], "privateKey", "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")), wantErr: "malformed private key"},
		{name: "previous key without publishUntil", doc: docWith(t, 1, with(good[2], "publishUntil", nil)), wantErr: "needs publishUntil"},
		{name: "no created time", doc: docWith(t, 1, with(good[0], "created", nil)), wantErr: "no created time"},
		{name: "duplicate kid", doc: docWith(t, 1, good[0], with(rawRecord(k1, keys.PhasePrevious))), wantErr: "appears twice"},
		{name: "two staged keys", doc: docWith(t, 1, good[1], rawRecord(k3, keys.PhaseStaged)), wantErr: "at most one may be staged"},
		{name: "wrong type", doc: []byte(`{"version":1,"keys":{}}`), wantErr: "wrong type"},
		{name: "signing observation", doc: []byte(`{"version":1,"keys":[],"signing":{"observedAt":"2026-12-01T10:00:00Z","kids":["b","a"]}}`)},
		{name: "signing observation without time", doc: []byte(`{"version":1,"keys":[],"signing":{"kids":["a"]}}`), wantErr: "no observedAt"},
		{name: "signing observation without kids", doc: []byte(`{"version":1,"keys":[],"signing":{"observedAt":"2026-12-01T10:00:00Z","kids":[]}}`), wantErr: "0 kids"},
		{name: "signing observation with an empty kid", doc: []byte(`{"version":1,"keys":[],"signing":{"observedAt":"2026-12-01T10:00:00Z","kids":[""]}}`), wantErr: "a kid of 0 bytes"},
		{name: "signing observation with duplicate kids", doc: []byte(`{"version":1,"keys":[],"signing":{"observedAt":"2026-12-01T10:00:00Z","kids":["a","a"]}}`), wantErr: "duplicate kids"},
		{name: "signing observation with too many kids", doc: []byte(`{"version":1,"keys":[],"signing":{"observedAt":"2026-12-01T10:00:00Z","kids":["1","2","3","4","5","6","7","8","9","10","11","12","13","14","15","16","17"]}}`), wantErr: "17 kids"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := ParseDocument(tc.doc)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if st == nil {
					t.Fatal("nil state")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
			// Errors reach logs and /readyz: they never quote key material.
			if strings.Contains(err.Error(), "BEGIN") || strings.Contains(err.Error(), string(k1.private[40:70])) {
				t.Errorf("error quotes key material: %v", err)
			}
		})
	}
}

func TestDocumentRoundTrip(t *testing.T) {
	k := testKeys(t)
	s := buildState(k,
		spec{key: "K1", phase: keys.PhaseActive},
		spec{key: "K2", phase: keys.PhaseStaged, promoting: t0.Add(time.Second)},
		spec{key: "K3", phase: keys.PhasePrevious, publishUntil: t0.Add(time.Hour)})
	s.SigningSecret = "eksa-system/prod-sa"
	b := mustMarshal(t, s)
	back, err := ParseDocument(b)
	if err != nil {
		t.Fatal(err)
	}
	if again := mustMarshal(t, back); !bytes.Equal(again, b) {
		t.Errorf("round trip differs:\n%s\n%s", b, again)
	}
	// Only the staged key's private key is in the document.
	if n := bytes.Count(b, []byte("BEGIN EC PRIVATE KEY")); n != 1 {
		t.Errorf("%d private key blocks in the document:\n%s", n, b)
	}
	two := s.Clone()
	two.Keys = append(two.Keys, Record{KID: "x", Phase: keys.PhaseStaged, Public: k["K4"].Public})
	two.Keys[len(two.Keys)-1].KID = k["K4"].KID
	if _, err := MarshalDocument(two); err == nil {
		t.Error("MarshalDocument wrote two staged keys")
	}
}

// FuzzParseDocument: whatever the state Secret holds, parsing never panics; what parses satisfies
// the invariants, round-trips unchanged through MarshalDocument, and only staged keys carry
// private keys.
func FuzzParseDocument(f *testing.F) {
	k := testKeys(f)
	s := buildState(k,
		spec{key: "K1", phase: keys.PhaseActive},
		spec{key: "K2", phase: keys.PhaseStaged},
		spec{key: "K3", phase: keys.PhasePrevious, publishUntil: t0.Add(time.Hour)})
	good, err := MarshalDocument(s)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"version":1,"keys":[]}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(``))
	f.Add(bytes.Replace(good, []byte(`"staged"`), []byte(`"active"`), 1))
	// A signer-mode state, whose active key carries its private key.
	signerState, err := NewSignerState(nil, AlgorithmES256, t0)
	if err != nil {
		f.Fatal(err)
	}
	if err := signerState.Stage(k["K2"]); err != nil {
		f.Fatal(err)
	}
	signerDoc, err := MarshalDocument(signerState)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(signerDoc)
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseDocument(data)
		if err != nil {
			if st != nil {
				t.Fatal("state returned with an error")
			}
			return
		}
		if err := st.validate(); err != nil {
			t.Fatalf("parsed state breaks an invariant: %v", err)
		}
		for _, r := range st.Keys {
			// Staged keys carry their private key; so does the active key of a signer-mode state.
			if r.HasPrivateKey() != (r.Phase == keys.PhaseStaged || st.Signer && r.Phase == keys.PhaseActive) {
				t.Fatalf("%s key with private key %v", r.Phase, r.HasPrivateKey())
			}
			if r.Public.KeyID() != r.KID {
				t.Fatalf("kid %s for key %s", r.KID, r.Public.KeyID())
			}
		}
		out, err := MarshalDocument(st)
		if err != nil {
			t.Fatalf("a parsed state does not marshal: %v", err)
		}
		back, err := ParseDocument(out)
		if err != nil {
			t.Fatalf("a marshalled state does not parse: %v", err)
		}
		if again, _ := MarshalDocument(back); !bytes.Equal(again, out) {
			t.Fatalf("not stable:\n%s\n%s", out, again)
		}
	})
}
