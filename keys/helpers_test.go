package keys_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// Test keys are generated once per test binary run: RSA generation is slow, above all under -race,
// and RSA 4096 is generated at most once.
var (
	rsa2048A = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA(2048) })
	rsa2048B = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA(2048) })
	rsa4096  = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA(4096) })
	rsa1024  = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA(1024) })
	ecP224   = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC(elliptic.P224()) })
	ecP256   = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC(elliptic.P256()) })
	ecP384   = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC(elliptic.P384()) })
	ecP521   = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC(elliptic.P521()) })
	edKey    = sync.OnceValue(func() ed25519.PrivateKey {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
)

func mustRSA(bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	return k
}

func mustEC(c elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// pemPKIX encodes pub as "PUBLIC KEY" (SubjectPublicKeyInfo).
func pemPKIX(pub crypto.PublicKey) []byte {
	return pemBlock("PUBLIC KEY", must(x509.MarshalPKIXPublicKey(pub)))
}

// pemPKCS8 encodes priv as "PRIVATE KEY".
func pemPKCS8(priv crypto.PrivateKey) []byte {
	return pemBlock("PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(priv)))
}

func pemRSAPublic(k *rsa.PublicKey) []byte {
	return pemBlock("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(k))
}

func pemRSAPrivate(k *rsa.PrivateKey) []byte {
	return pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k))
}

func pemECPrivate(k *ecdsa.PrivateKey) []byte {
	return pemBlock("EC PRIVATE KEY", must(x509.MarshalECPrivateKey(k)))
}

// pemECParameters is the "EC PARAMETERS" block `openssl ecparam -genkey` writes in front of the key:
// the DER of the named curve's OID.
func pemECParameters(c elliptic.Curve) []byte {
	oids := map[elliptic.Curve]asn1.ObjectIdentifier{
		elliptic.P224(): {1, 3, 132, 0, 33},
		elliptic.P256(): {1, 2, 840, 10045, 3, 1, 7},
		elliptic.P384(): {1, 3, 132, 0, 34},
		elliptic.P521(): {1, 3, 132, 0, 35},
	}
	return pemBlock("EC PARAMETERS", must(asn1.Marshal(oids[c])))
}

// pemCertificate is a self-signed certificate for priv.
func pemCertificate(priv crypto.Signer) []byte {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: "service-accounts"},
		NotBefore:    time.Unix(1700000000, 0),
		NotAfter:     time.Unix(1900000000, 0),
	}
	return pemBlock("CERTIFICATE", must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)))
}

func concat(parts ...[]byte) []byte { return slices.Concat(parts...) }

// independentKID computes kube-apiserver's key ID without the package under test.
func independentKID(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatalf("MarshalPKIXPublicKey: %v", err)
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func mustPublicKey(t testing.TB, pub crypto.PublicKey) keys.PublicKey {
	t.Helper()
	k, err := keys.NewPublicKey(pub)
	if err != nil {
		t.Fatalf("NewPublicKey(%T): %v", pub, err)
	}
	return k
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testdataKey parses a committed single-key PEM file.
func testdataKey(t testing.TB, name string) keys.PublicKey {
	t.Helper()
	ks, err := keys.ParsePEM(name, readTestdata(t, name))
	if err != nil {
		t.Fatalf("ParsePEM(%s): %v", name, err)
	}
	if len(ks) != 1 {
		t.Fatalf("ParsePEM(%s) = %d keys, want 1", name, len(ks))
	}
	return ks[0]
}

// Members a rendered JWK may have; anything else (d, p, q, dp, dq, qi, k, oth, x5c, ...) fails.
var allowedJWKMembers = map[string][]string{
	"RSA": {"alg", "e", "kid", "kty", "n", "use"},
	"EC":  {"alg", "crv", "kid", "kty", "use", "x", "y"},
}

// checkOnlyPublicMembers decodes a rendered JWKS and fails unless every key object has exactly the
// allowed public member names for its kty.
func checkOnlyPublicMembers(t testing.TB, body []byte) {
	t.Helper()
	var doc map[string][]map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("rendered JWKS is not JSON: %v\n%s", err, body)
	}
	if len(doc) != 1 || doc["keys"] == nil {
		t.Fatalf("JWKS top level must be exactly {\"keys\":[...]}, got %s", body)
	}
	for i, k := range doc["keys"] {
		var kty string
		if err := json.Unmarshal(k["kty"], &kty); err != nil {
			t.Fatalf("key %d: kty: %v", i, err)
		}
		allowed, ok := allowedJWKMembers[kty]
		if !ok {
			t.Fatalf("key %d has kty %q", i, kty)
		}
		var names []string
		for n := range k {
			names = append(names, n)
		}
		slices.Sort(names)
		if !slices.Equal(names, allowed) {
			t.Errorf("key %d (%s) has members %v, want exactly %v\n%s", i, kty, names, allowed, body)
		}
	}
}

func certDER(priv crypto.Signer) []byte {
	b, _ := pem.Decode(pemCertificate(priv))
	return b.Bytes
}
