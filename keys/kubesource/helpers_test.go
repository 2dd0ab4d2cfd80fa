package kubesource

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// testKey is a generated key pair in the encodings clusters use.
type testKey struct {
	priv   []byte // PKCS#1 (RSA) or SEC 1 (EC) PEM, as kubeadm and Cluster API write them
	pkcs8  []byte // PKCS#8 PEM
	pub    []byte // PKIX PUBLIC KEY PEM
	cert   []byte // self-signed CERTIFICATE PEM
	kid    string
	signer crypto.Signer
}

func newRSAKey(t testing.TB, bits int) testKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatalf("generating RSA %d key: %v", bits, err)
	}
	return encodeKey(t, k, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
}

func newECKey(t testing.TB, c elliptic.Curve) testKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatalf("generating EC key: %v", err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatalf("encoding EC key: %v", err)
	}
	return encodeKey(t, k, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
}

func encodeKey(t testing.TB, k crypto.Signer, privPEM []byte) testKey {
	t.Helper()
	p8, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatalf("encoding PKCS#8: %v", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatalf("encoding public key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "service-account-signer"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatalf("creating certificate: %v", err)
	}
	kid, err := keys.KeyID(k.Public())
	if err != nil {
		t.Fatalf("computing kid: %v", err)
	}
	return testKey{
		priv:   privPEM,
		pkcs8:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
		pub:    pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}),
		cert:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}),
		kid:    kid,
		signer: k,
	}
}

func ed25519PublicPEM(t testing.TB) []byte {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("generating ed25519 key: %v", err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatalf("encoding ed25519 key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func secret(data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "cluster-sa"},
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}
}

// leakWindow is the longest run of input bytes an error may repeat (keys.ParsePEM's guarantee).
const leakWindow = 16

// leakedInput returns a run of more than leakWindow bytes of one of data's values that msg
// contains, or "" if there is none. Runs that are part of an entry name (errors list names on
// purpose) do not count.
func leakedInput(msg string, data map[string][]byte) string {
	for _, v := range data {
		for i := 0; i+leakWindow < len(v); i++ {
			w := string(v[i : i+leakWindow+1])
			if !strings.Contains(msg, w) {
				continue
			}
			partOfName := strings.Contains("ENCRYPTED PRIVATE KEY OPENSSH PRIVATE KEY", w) // labels keys.ParsePEM names on purpose
			for name := range data {
				if strings.Contains(name, w) {
					partOfName = true
				}
			}
			if !partOfName {
				return w
			}
		}
	}
	return ""
}

// looksLikeKeyMaterial reports PEM armour or base64 DER in msg.
func looksLikeKeyMaterial(msg string) bool {
	return strings.Contains(msg, "-----") || strings.Contains(msg, "MII") || strings.Contains(msg, "BEGIN")
}

// parsedSecret is what the Source's informer caches instead of a Secret.
type parsedSecret = cached[parsed]

// transform is the Source's informer transform.
func transform(obj any) (any, error) { return New(nil, "", "", nil).watcher().transform(obj) }
