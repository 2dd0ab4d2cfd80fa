package keys

import (
	"encoding/json"
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// JWKSOptions changes how a key set is rendered.
type JWKSOptions struct {
	// LegacyEmptyKID adds, for every key, a copy with "kid": "". Tokens minted before Kubernetes
	// 1.16 carry no kid, and relying parties such as AWS STS look those up as kid "".
	LegacyEmptyKID bool
}

// publicJWK has exactly the public members kube-apiserver publishes, in the order go-jose (and so
// kube-apiserver) writes them. Rendering goes through this type, which has no field for any private
// parameter, so private material cannot reach a document even if a private key were passed in.
// Kid has no omitempty: the legacy copy must say "kid": "" explicitly.
type publicJWK struct {
	Use string `json:"use"`
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Crv string `json:"crv,omitempty"`
	Alg string `json:"alg"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

type publicJWKS struct {
	Keys []publicJWK `json:"keys"`
}

// RenderJWKS renders the set as a JSON Web Key Set, byte for byte as kube-apiserver's
// /openid/v1/jwks renders the same keys, in the set's order.
func RenderJWKS(s Set, opts JWKSOptions) ([]byte, error) {
	doc := publicJWKS{Keys: make([]publicJWK, 0, s.Len())}
	for _, k := range s.Keys() {
		jwk, err := toPublicJWK(k.Public)
		if err != nil {
			return nil, err
		}
		doc.Keys = append(doc.Keys, jwk)
	}
	if opts.LegacyEmptyKID {
		for i := range s.Len() {
			legacy := doc.Keys[i]
			legacy.Kid = ""
			doc.Keys = append(doc.Keys, legacy)
		}
	}
	body, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encoding JWKS: %w", err)
	}
	return body, nil
}

// toPublicJWK lets go-jose do the JWK encoding (big-endian integers, EC coordinates padded to the
// curve size) and keeps only the public members of its output.
func toPublicJWK(k PublicKey) (publicJWK, error) {
	raw, err := json.Marshal(jose.JSONWebKey{Key: k.Public(), KeyID: k.KeyID(), Algorithm: k.Algorithm(), Use: "sig"})
	if err != nil {
		return publicJWK{}, fmt.Errorf("encoding key %s as JWK: %w", k, err)
	}
	var jwk publicJWK
	if err := json.Unmarshal(raw, &jwk); err != nil {
		return publicJWK{}, fmt.Errorf("decoding JWK of key %s: %w", k, err)
	}
	return jwk, nil
}
