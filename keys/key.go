// Package keys turns service-account signing-key material into the public key set an OIDC issuer
// publishes: PEM parsing, kube-apiserver compatible key IDs, the key set with each key's lifecycle
// phase, JWKS rendering, and the collector that merges key sources.
//
// Private key material never leaves this package's parser: PublicKey can only hold an RSA or ECDSA
// public key, and everything downstream (rendering, sources, the server) only ever sees PublicKey.
package keys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
)

// MinRSABits is the smallest RSA modulus accepted. RS256 with less than 2048 bits is rejected by
// AWS STS and by most relying parties.
const MinRSABits = 2048

// PublicKey is a verification key together with the key ID and JWS algorithm kube-apiserver gives
// it. Its fields are unexported so that nothing but an RSA or ECDSA public key can be placed in it.
type PublicKey struct {
	key crypto.PublicKey
	der []byte
	kid string
	alg string
}

// NewPublicKey validates pub and computes its key ID and algorithm. It accepts *rsa.PublicKey
// (at least MinRSABits) and *ecdsa.PublicKey on P-256, P-384 or P-521; private keys are refused so
// that a caller cannot smuggle private parameters into a rendered document.
func NewPublicKey(pub crypto.PublicKey) (PublicKey, error) {
	var alg string
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil || k.N.BitLen() < MinRSABits {
			bits := 0
			if k != nil && k.N != nil {
				bits = k.N.BitLen()
			}
			return PublicKey{}, fmt.Errorf("RSA key has %d bits; at least %d are required", bits, MinRSABits)
		}
		alg = "RS256"
	case *ecdsa.PublicKey:
		if k == nil {
			return PublicKey{}, fmt.Errorf("nil ECDSA public key")
		}
		a, err := ecdsaAlgorithm(k.Curve)
		if err != nil {
			return PublicKey{}, err
		}
		alg = a
	case *rsa.PrivateKey, *ecdsa.PrivateKey:
		return PublicKey{}, fmt.Errorf("refusing a private key where a public key is required")
	default:
		return PublicKey{}, fmt.Errorf("unsupported key type %T: only RSA and ECDSA keys can sign service-account tokens", pub)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return PublicKey{}, fmt.Errorf("encoding public key as PKIX: %w", err)
	}
	return PublicKey{key: pub, der: der, kid: keyIDFromDER(der), alg: alg}, nil
}

func ecdsaAlgorithm(c elliptic.Curve) (string, error) {
	switch c {
	case elliptic.P256():
		return "ES256", nil
	case elliptic.P384():
		return "ES384", nil
	case elliptic.P521():
		return "ES512", nil
	}
	name := "unknown"
	if c != nil && c.Params() != nil {
		name = c.Params().Name
	}
	return "", fmt.Errorf("ECDSA curve %s is not supported: use P-256, P-384 or P-521", name)
}

// KeyID returns the key ID exactly as kube-apiserver computes it: the unpadded base64url encoding of
// the SHA-256 digest of the key's PKIX (SubjectPublicKeyInfo) DER encoding.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encoding public key as PKIX: %w", err)
	}
	return keyIDFromDER(der), nil
}

func keyIDFromDER(der []byte) string {
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// KeyID is the kube-apiserver key ID of the key.
func (k PublicKey) KeyID() string { return k.kid }

// Algorithm is the JWS algorithm tokens signed by this key use (RS256, ES256, ES384, ES512).
func (k PublicKey) Algorithm() string { return k.alg }

// Public returns the underlying *rsa.PublicKey or *ecdsa.PublicKey.
func (k PublicKey) Public() crypto.PublicKey { return k.key }

// IsZero reports whether k holds no key.
func (k PublicKey) IsZero() bool { return k.key == nil }

// Equal reports whether both hold the same public key.
func (k PublicKey) Equal(o PublicKey) bool { return bytes.Equal(k.der, o.der) }

// DER is the key's PKIX DER encoding (what its kid hashes), a copy the caller may keep.
func (k PublicKey) DER() []byte { return bytes.Clone(k.der) }

// PEM encodes the key as a PKIX "PUBLIC KEY" block, the format of kube-apiserver's
// --service-account-key-file and of Cluster API's tls.crt.
func (k PublicKey) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: k.der})
}

// String identifies the key in logs without revealing anything secret.
func (k PublicKey) String() string { return k.alg + ":" + k.kid }
