package keys_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"math/big"
	"strings"
	"testing"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// Known-answer vectors: kids of committed public keys, computed with openssl when the files were
// written:
//
//	openssl pkey -pubin -in k.pem -outform DER | openssl dgst -sha256 -binary | basenc --base64url | tr -d '='
//
// A change to the kid algorithm (which would orphan every token kube-apiserver signed) fails here.
var kidVectors = []struct {
	file, kid, alg string
}{
	{"rsa2048.pub.pem", "1M6azHsVBk47l5Txlez7GbwfpSxG-Uv5mVXrXsx8bDo", "RS256"},
	{"ecp256.pub.pem", "-OP9sN_vHlkLO13uuh9o2X1pzvIj1mo69QP29QLi2m8", "ES256"},
	{"ecp521.pub.pem", "4d9SV8jY-JY4It46y8SlOljUZIoYOKytWp_JXbISsB8", "ES512"},
}

func TestKeyIDKnownAnswers(t *testing.T) {
	for _, v := range kidVectors {
		t.Run(v.file, func(t *testing.T) {
			k := testdataKey(t, v.file)
			if k.KeyID() != v.kid {
				t.Errorf("PublicKey.KeyID() = %q, want %q", k.KeyID(), v.kid)
			}
			kid, err := keys.KeyID(k.Public())
			if err != nil {
				t.Fatal(err)
			}
			if kid != v.kid {
				t.Errorf("KeyID() = %q, want %q", kid, v.kid)
			}
			if k.Algorithm() != v.alg {
				t.Errorf("Algorithm() = %q, want %q", k.Algorithm(), v.alg)
			}
			if k.String() != v.alg+":"+v.kid {
				t.Errorf("String() = %q", k.String())
			}
		})
	}
}

func TestKeyIDMatchesIndependentComputation(t *testing.T) {
	pubs := map[string]crypto.PublicKey{
		"RSA 2048":  &rsa2048A().PublicKey,
		"RSA 2048b": &rsa2048B().PublicKey,
		"RSA 4096":  &rsa4096().PublicKey,
		"P-256":     &ecP256().PublicKey,
		"P-384":     &ecP384().PublicKey,
		"P-521":     &ecP521().PublicKey,
	}
	seen := map[string]string{}
	for name, pub := range pubs {
		want := independentKID(t, pub)
		got, err := keys.KeyID(pub)
		if err != nil {
			t.Fatalf("%s: KeyID: %v", name, err)
		}
		if got != want {
			t.Errorf("%s: KeyID = %q, want %q", name, got, want)
		}
		if k := mustPublicKey(t, pub); k.KeyID() != want {
			t.Errorf("%s: PublicKey.KeyID = %q, want %q", name, k.KeyID(), want)
		}
		if len(got) != 43 || strings.ContainsAny(got, "+/=") {
			t.Errorf("%s: kid %q is not unpadded base64url of 32 bytes", name, got)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("%s and %s share kid %s", name, other, got)
		}
		seen[got] = name
	}
	// The kid of a private key's public half is the public key's kid, whatever the encoding.
	r := rsa2048A()
	for _, data := range [][]byte{pemPKIX(&r.PublicKey), pemRSAPublic(&r.PublicKey), pemRSAPrivate(r), pemPKCS8(r), pemCertificate(r)} {
		ks, err := keys.ParsePEM("x", data)
		if err != nil {
			t.Fatal(err)
		}
		if ks[0].KeyID() != independentKID(t, &r.PublicKey) {
			t.Errorf("kid from %q block differs", strings.SplitN(string(data), "\n", 2)[0])
		}
	}
}

func TestKeyIDRejectsUnencodableKey(t *testing.T) {
	if _, err := keys.KeyID(struct{}{}); err == nil {
		t.Error("KeyID(struct{}{}) succeeded")
	}
}

func TestNewPublicKey(t *testing.T) {
	//lint:ignore SA1019 an invalid key can only be built from raw coordinates
	offCurve := &ecdsa.PublicKey{Curve: elliptic.P256(), X: big.NewInt(1), Y: big.NewInt(1)}
	tests := []struct {
		name    string
		pub     crypto.PublicKey
		alg     string // empty: must be refused
		errText string
	}{
		{"RSA 2048", &rsa2048A().PublicKey, "RS256", ""},
		{"RSA 4096", &rsa4096().PublicKey, "RS256", ""},
		{"P-256", &ecP256().PublicKey, "ES256", ""},
		{"P-384", &ecP384().PublicKey, "ES384", ""},
		{"P-521", &ecP521().PublicKey, "ES512", ""},
		{"*rsa.PrivateKey", rsa2048A(), "", "private key"},
		{"*ecdsa.PrivateKey", ecP256(), "", "private key"},
		{"rsa.PublicKey by value", rsa2048A().PublicKey, "", "unsupported key type"},
		{"RSA 1024", &rsa1024().PublicKey, "", "1024 bits"},
		{"RSA without modulus", &rsa.PublicKey{E: 65537}, "", "0 bits"},
		{"P-224", &ecP224().PublicKey, "", "P-224"},
		{"ECDSA without curve", &ecdsa.PublicKey{}, "", "not supported"},
		{"ECDSA point off the curve", offCurve, "", ""},
		{"Ed25519", edKey().Public(), "", "unsupported key type ed25519.PublicKey"},
		{"Ed25519 private", edKey(), "", "unsupported key type"},
		{"nil", nil, "", "unsupported key type"},
		{"nil *rsa.PublicKey", (*rsa.PublicKey)(nil), "", "RSA"},
		{"nil *ecdsa.PublicKey", (*ecdsa.PublicKey)(nil), "", "ECDSA"},
		{"nil *rsa.PrivateKey", (*rsa.PrivateKey)(nil), "", "private key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := keys.NewPublicKey(tc.pub)
			if tc.alg == "" {
				if err == nil {
					t.Fatalf("NewPublicKey accepted %T: %s", tc.pub, k)
				}
				if !strings.Contains(err.Error(), tc.errText) {
					t.Errorf("error %q does not contain %q", err, tc.errText)
				}
				if !k.IsZero() {
					t.Errorf("NewPublicKey returned a non-zero key with an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.IsZero() || k.Algorithm() != tc.alg || k.KeyID() != independentKID(t, tc.pub) {
				t.Errorf("got %s (zero=%v), want alg %s", k, k.IsZero(), tc.alg)
			}
			if k.Public() != tc.pub {
				t.Errorf("Public() does not return the key given")
			}
		})
	}
}

func TestPublicKeyZeroAndEqual(t *testing.T) {
	var zero keys.PublicKey
	if !zero.IsZero() || zero.KeyID() != "" || zero.Algorithm() != "" || zero.Public() != nil {
		t.Errorf("zero PublicKey: %#v", zero)
	}
	a := mustPublicKey(t, &ecP256().PublicKey)
	a2 := mustPublicKey(t, &ecP256().PublicKey)
	b := mustPublicKey(t, &ecP384().PublicKey)
	if !a.Equal(a2) || a.Equal(b) || a.Equal(zero) || !zero.Equal(keys.PublicKey{}) {
		t.Error("Equal is wrong")
	}
	// A key parsed from PEM equals the one built from the crypto key.
	ks, err := keys.ParsePEM("x", pemECPrivate(ecP256()))
	if err != nil {
		t.Fatal(err)
	}
	if !ks[0].Equal(a) {
		t.Error("parsed key does not equal the constructed key")
	}
}
