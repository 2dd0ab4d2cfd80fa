package keys_test

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// FuzzParsePEM: whatever the input, ParsePEM does not panic; what it accepts is at least one
// RSA/ECDSA public key that renders without private members and with the kube-apiserver kid; what
// it rejects comes as a *ParseError.
func FuzzParsePEM(f *testing.F) {
	// RSA 4096 generation would slow down every fuzz worker's start; the committed keys and the
	// 2048-bit ones cover the same code.
	for _, tc := range validParseCases(false) {
		f.Add(tc.data)
	}
	for _, tc := range invalidParseCases() {
		f.Add(tc.data)
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "*.pem"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := keys.ParsePEM("fuzz", data)
		if err != nil {
			var pe *keys.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T (%v) is not a *keys.ParseError", err, err)
			}
			if got != nil {
				t.Fatalf("keys %v returned with error %v", got, err)
			}
			if pe.Input != "fuzz" || pe.Error() == "" {
				t.Fatalf("ParseError %#v", pe)
			}
			return
		}
		if len(got) == 0 {
			t.Fatal("ParsePEM succeeded with no key")
		}
		var ks []keys.Key
		for _, k := range got {
			switch k.Public().(type) {
			case *rsa.PublicKey, *ecdsa.PublicKey:
			default:
				t.Fatalf("key of type %T", k.Public())
			}
			if k.KeyID() != independentKID(t, k.Public()) {
				t.Fatalf("kid %s is not the kube-apiserver kid", k.KeyID())
			}
			ks = append(ks, keys.Key{Public: k, Phase: keys.PhaseActive})
		}
		body, err := keys.RenderJWKS(keys.NewSet(ks...), keys.JWKSOptions{LegacyEmptyKID: true})
		if err != nil {
			t.Fatalf("RenderJWKS of parsed keys: %v", err)
		}
		checkOnlyPublicMembers(t, body)
	})
}
