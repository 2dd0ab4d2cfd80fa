package signingprobe

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// maxHeaderSize bounds the encoded JOSE header read from a probe token. kube-apiserver's headers
// are under 150 bytes (alg, kid, and for external signers typ); anything far larger is not a
// service-account token.
const maxHeaderSize = 4 << 10

// maxKIDLength is the longest kid accepted, KEP-740's own limit on key ids.
const maxKIDLength = 1024

// Header is the part of a token's JOSE header the probe reads.
type Header struct {
	Algorithm string `json:"alg"`
	KeyID     string `json:"kid"`
}

// ParseHeader reads the JOSE header of a compact JWS without verifying anything: the probe asks
// which key signed a token it just received from the API server, not whether to trust it. It never
// quotes the token in an error (the token is a credential).
func ParseHeader(token string) (Header, error) {
	encoded, rest, ok := strings.Cut(token, ".")
	if !ok || strings.Count(rest, ".") != 1 {
		return Header{}, errors.New("token is not a compact JWS (want three dot-separated parts)")
	}
	if len(encoded) == 0 || len(encoded) > maxHeaderSize {
		return Header{}, fmt.Errorf("token header is %d bytes, want 1 to %d", len(encoded), maxHeaderSize)
	}
	raw, err := base64.RawURLEncoding.DecodeString(encoded)
	if err != nil {
		return Header{}, errors.New("token header is not base64url without padding")
	}
	var h Header
	if err := json.Unmarshal(raw, &h); err != nil {
		return Header{}, errors.New("token header is not a JSON object")
	}
	switch {
	case h.KeyID == "":
		return Header{}, errors.New("token header has no kid (the API server signs with a key it cannot name)")
	case len(h.KeyID) > maxKIDLength:
		return Header{}, fmt.Errorf("token header kid is %d bytes, more than %d", len(h.KeyID), maxKIDLength)
	case h.Algorithm == "":
		return Header{}, errors.New("token header has no alg")
	}
	return h, nil
}

// subject reads the sub claim of a compact JWS without verifying it (the process's own token).
func subject(token string) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(parts[1]) > 64<<10 {
		return "", errors.New("not a compact JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", errors.New("payload is not base64url without padding")
	}
	var c struct {
		Subject string `json:"sub"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", errors.New("payload is not a JSON object")
	}
	return c.Subject, nil
}
