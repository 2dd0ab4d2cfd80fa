package kubesource

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"maps"
	"slices"
	"testing"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// Fuzz inputs encode a Secret's data as records separated by recordSep, each "name\x00value".
// Any byte string decodes to some data map.
const recordSep = "\x00\x01"

func encodeData(data map[string][]byte) []byte {
	var out [][]byte
	for _, name := range slices.Sorted(maps.Keys(data)) {
		out = append(out, append(append([]byte(name), 0), data[name]...))
	}
	return bytes.Join(out, []byte(recordSep))
}

func decodeData(b []byte) map[string][]byte {
	data := map[string][]byte{}
	if len(b) == 0 {
		return data
	}
	for rec := range bytes.SplitSeq(b, []byte(recordSep)) {
		name, value, _ := bytes.Cut(rec, []byte{0})
		data[string(name)] = value
	}
	return data
}

func FuzzKeysFromSecret(f *testing.F) {
	for _, tc := range secretCases(f, generateTestKeys(f, false)) {
		f.Add(encodeData(tc.data))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		data := decodeData(in)
		got, err := KeysFromSecret(secret(data))
		if err != nil {
			if got != nil {
				t.Errorf("keys returned with an error")
			}
			if leak := leakedInput(err.Error(), data); leak != "" {
				t.Fatalf("error %q quotes %q from the secret's data", err, leak)
			}
			return
		}
		if len(got) == 0 {
			t.Fatal("no error and no keys")
		}
		seen := map[string]bool{}
		for _, k := range got {
			if k.Public.IsZero() {
				t.Fatal("zero key returned")
			}
			if k.Phase != keys.PhaseActive && k.Phase != keys.PhasePublished {
				t.Fatalf("key %s has phase %q", k.Public, k.Phase)
			}
			if seen[k.Public.KeyID()] {
				t.Fatalf("key %s returned twice", k.Public)
			}
			seen[k.Public.KeyID()] = true
			switch k.Public.Public().(type) {
			case *rsa.PublicKey, *ecdsa.PublicKey:
			default:
				t.Fatalf("key %s holds %T", k.Public, k.Public.Public())
			}
			again, err := keys.NewPublicKey(k.Public.Public())
			if err != nil {
				t.Fatalf("returned key %s is not a valid public key: %v", k.Public, err)
			}
			if !again.Equal(k.Public) || again.KeyID() != k.Public.KeyID() || again.Algorithm() != k.Public.Algorithm() {
				t.Fatalf("returned key %s differs from its revalidation %s", k.Public, again)
			}
		}
	})
}
