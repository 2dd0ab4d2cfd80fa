package lifecycle

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// Algorithms a staged key can be generated for.
const (
	AlgorithmRS256 = "RS256"
	AlgorithmES256 = "ES256"
)

// rsaBits is the size of generated RSA keys: what kubeadm and Cluster API generate.
const rsaBits = 2048

// NewStagedRecord generates a key pair for alg (RS256: RSA 2048, PKCS #1; ES256: P-256, SEC 1 — the
// PEM forms kubeadm and Cluster API write) and returns it as a staged record created at now.
func NewStagedRecord(alg string, now time.Time) (Record, error) {
	var (
		block *pem.Block
		pub   any
	)
	switch alg {
	case AlgorithmRS256, "":
		k, err := rsa.GenerateKey(rand.Reader, rsaBits)
		if err != nil {
			return Record{}, fmt.Errorf("generating RSA key: %w", err)
		}
		block, pub = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}, &k.PublicKey
	case AlgorithmES256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return Record{}, fmt.Errorf("generating ECDSA key: %w", err)
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return Record{}, fmt.Errorf("encoding ECDSA key: %w", err)
		}
		block, pub = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}, &k.PublicKey
	default:
		return Record{}, fmt.Errorf("%w: algorithm %q: use %s or %s", ErrInvalid, alg, AlgorithmRS256, AlgorithmES256)
	}
	pk, err := keys.NewPublicKey(pub)
	if err != nil {
		return Record{}, fmt.Errorf("generated key: %w", err)
	}
	return Record{
		KID: pk.KeyID(), Phase: keys.PhaseStaged, Algorithm: pk.Algorithm(), Public: pk,
		Created: now, private: secretPEM(pem.EncodeToMemory(block)),
	}, nil
}
