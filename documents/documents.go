// Package documents renders the two documents an OIDC issuer publishes — the discovery document
// and the JWKS — once per key-set change, together with everything a publisher needs to serve or
// upload them (path, content type, cache control, strong ETag). Publishers (the HTTP server, the
// mirror sinks) only ever copy these bytes; none of them renders JSON.
package documents

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// Paths of the documents below the issuer URL. JWKSPath is kube-apiserver's default.
const (
	DiscoveryPath = "/.well-known/openid-configuration"
	JWKSPath      = "/openid/v1/jwks"
)

// Content types kube-apiserver uses for the two documents.
const (
	DiscoveryContentType = "application/json"
	JWKSContentType      = "application/jwk-set+json"
)

// DefaultMaxAge is kube-apiserver's Cache-Control max-age for both documents.
const DefaultMaxAge = time.Hour

// Config says how the documents describe the issuer.
type Config struct {
	// IssuerURL is the token's iss, byte for byte.
	IssuerURL string
	// JWKSURI is advertised as jwks_uri; empty means IssuerURL + JWKSPath.
	JWKSURI string
	// MaxAge is the Cache-Control max-age of both documents.
	MaxAge time.Duration
	// JWKS are the rendering options for the key set.
	JWKS keys.JWKSOptions
}

// Validate checks the configuration, with the issuer URL held to the rules relying parties apply.
func (c Config) Validate() error {
	if err := ValidateIssuerURL(c.IssuerURL); err != nil {
		return err
	}
	if c.JWKSURI != "" {
		u, err := url.Parse(c.JWKSURI)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.Fragment != "" {
			return fmt.Errorf("jwks URI %q must be an absolute https URL without fragment", c.JWKSURI)
		}
	}
	if c.MaxAge < 0 {
		return fmt.Errorf("max-age %s must not be negative", c.MaxAge)
	}
	return nil
}

// PathPrefix is the path part of the issuer URL ("" or "/cluster-a"), under which the documents
// are served.
func PathPrefix(issuer string) string {
	u, err := url.Parse(issuer)
	if err != nil {
		return ""
	}
	return u.EscapedPath()
}

// Document is one rendered document with the HTTP metadata it is served and uploaded with.
type Document struct {
	// Path is relative to the issuer URL's path, e.g. "/.well-known/openid-configuration".
	Path         string
	Body         []byte
	ContentType  string
	CacheControl string
	// ETag is a strong entity tag (quoted) derived from the body.
	ETag string
	// SHA256 is the hex SHA-256 of the body, which mirrors store to skip unchanged writes.
	SHA256 string
}

// Set is one immutable rendering of both documents for one key set.
type Set struct {
	Keys      keys.Set
	Discovery Document
	JWKS      Document
	// Generation counts renderings since the process started; it changes with every key-set change.
	Generation uint64
	Rendered   time.Time
}

// discoveryDoc has the members of kube-apiserver's discovery document, in its order.
type discoveryDoc struct {
	Issuer                 string   `json:"issuer"`
	JWKSURI                string   `json:"jwks_uri"`
	ResponseTypes          []string `json:"response_types_supported"`
	SubjectTypes           []string `json:"subject_types_supported"`
	IDTokenSigningAlgValue []string `json:"id_token_signing_alg_values_supported"`
}

// Render renders both documents for ks. It refuses an empty key set: publishing an empty JWKS would
// make every relying party reject every token.
func Render(cfg Config, ks keys.Set, generation uint64, now time.Time) (*Set, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if ks.Len() == 0 {
		return nil, errors.New("refusing to render documents for an empty key set")
	}
	jwksURI := cfg.JWKSURI
	if jwksURI == "" {
		jwksURI = cfg.IssuerURL + JWKSPath
	}
	disco, err := json.Marshal(discoveryDoc{
		Issuer:                 cfg.IssuerURL,
		JWKSURI:                jwksURI,
		ResponseTypes:          []string{"id_token"},
		SubjectTypes:           []string{"public"},
		IDTokenSigningAlgValue: ks.Algorithms(),
	})
	if err != nil {
		return nil, fmt.Errorf("encoding discovery document: %w", err)
	}
	jwks, err := keys.RenderJWKS(ks, cfg.JWKS)
	if err != nil {
		return nil, fmt.Errorf("rendering JWKS: %w", err)
	}
	cacheControl := "public, max-age=" + strconv.Itoa(int(cfg.MaxAge/time.Second))
	return &Set{
		Keys:       ks,
		Discovery:  newDocument(DiscoveryPath, disco, DiscoveryContentType, cacheControl),
		JWKS:       newDocument(JWKSPath, jwks, JWKSContentType, cacheControl),
		Generation: generation,
		Rendered:   now,
	}, nil
}

func newDocument(path string, body []byte, contentType, cacheControl string) Document {
	sum := sha256.Sum256(body)
	return Document{
		Path:         path,
		Body:         body,
		ContentType:  contentType,
		CacheControl: cacheControl,
		ETag:         `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`,
		SHA256:       fmt.Sprintf("%x", sum),
	}
}
