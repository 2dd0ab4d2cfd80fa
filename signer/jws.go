package signer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
)

// jwtHeader is the protected header kube-apiserver's client accepts: exactly these three members
// (it decodes with DisallowUnknownFields), typ "JWT", a non-empty kid of at most 1024 characters
// and alg one of RS256, ES256, ES384, ES512. Field order is the serialization order.
type jwtHeader struct {
	Algorithm string `json:"alg"`
	KeyID     string `json:"kid"`
	Type      string `json:"typ"`
}

// encodeHeader returns the header segment of a token signed by key: base64url without padding.
func encodeHeader(key SigningKey) (string, error) {
	b, err := json.Marshal(jwtHeader{Algorithm: key.Algorithm(), KeyID: key.KeyID(), Type: "JWT"})
	if err != nil {
		return "", fmt.Errorf("encoding JWT header: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// hashFor is the digest each JWS algorithm signs (RFC 7518 section 3.1).
func hashFor(alg string) (crypto.Hash, error) {
	switch alg {
	case "RS256", "ES256":
		return crypto.SHA256, nil
	case "ES384":
		return crypto.SHA384, nil
	case "ES512":
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("unsupported JWS algorithm %q", alg)
}

// signJWS signs the JWS signing input (header segment "." payload segment) with key and returns
// the signature in its JWS form: the PKCS #1 v1.5 signature for RS256, and for ECDSA the fixed-size
// big-endian r||s (RFC 7518 section 3.4), not the ASN.1 DER that crypto.Signer produces.
func signJWS(key SigningKey, signingInput string) ([]byte, error) {
	hash, err := hashFor(key.Algorithm())
	if err != nil {
		return nil, err
	}
	var sig []byte
	if ms, ok := key.signer.(crypto.MessageSigner); ok {
		// A remote key (AWS KMS) is given the message: it hashes it itself.
		sig, err = ms.SignMessage(rand.Reader, []byte(signingInput), hash)
	} else {
		h := hash.New()
		h.Write([]byte(signingInput))
		// Passing the hash (not *rsa.PSSOptions) selects PKCS #1 v1.5 for RSA signers.
		sig, err = key.signer.Sign(rand.Reader, h.Sum(nil), hash)
	}
	if err != nil {
		return nil, fmt.Errorf("signing with %s: %w", key, err)
	}
	pub, isECDSA := key.public.Public().(*ecdsa.PublicKey)
	if !isECDSA {
		return sig, nil
	}
	raw, err := ecdsaDERToJWS(sig, (pub.Curve.Params().BitSize+7)/8)
	if err != nil {
		return nil, fmt.Errorf("signing with %s: %w", key, err)
	}
	return raw, nil
}

// ecdsaDERToJWS converts an ASN.1 ECDSA-Sig-Value to r||s, each left-padded to size bytes.
func ecdsaDERToJWS(der []byte, size int) ([]byte, error) {
	var v struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &v)
	if err != nil {
		return nil, fmt.Errorf("decoding ECDSA signature: %w", err)
	}
	if len(rest) != 0 {
		return nil, errors.New("decoding ECDSA signature: trailing data")
	}
	if v.R.Sign() <= 0 || v.S.Sign() <= 0 || v.R.BitLen() > size*8 || v.S.BitLen() > size*8 {
		return nil, errors.New("decoding ECDSA signature: r or s out of range")
	}
	out := make([]byte, 2*size)
	v.R.FillBytes(out[:size])
	v.S.FillBytes(out[size:])
	return out, nil
}
