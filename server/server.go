// Package server serves the issuer's two documents (discovery and JWKS) and the operational
// endpoints (/healthz, /readyz, /metrics), and runs the listeners they are served on.
//
// The documents are rendered elsewhere (package documents) once per key-set change and handed over
// with Publish. Serving only copies pre-rendered bytes and pre-built header values: a relying party
// hammering the JWKS costs no JSON encoding and no allocation in this package, which keeps the
// garbage collector out of the serving path (measured on a 2-core machine, GC cost about 10 % of
// JWKS throughput once it had a larger heap to scan).
package server

import (
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
)

// Config configures a Server.
type Config struct {
	// IssuerURL is the issuer, byte for byte the tokens' iss. Its path is the prefix below which
	// the documents are served (documents.PathPrefix).
	IssuerURL string
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Registerer receives the server's metrics; nil leaves them unregistered. No global registry
	// is ever used, so several servers (tests, a future multi-issuer mode) can coexist.
	Registerer prometheus.Registerer
}

// Server holds the currently published documents and serves them.
type Server struct {
	logger *slog.Logger
	// discoveryPath and jwksPath are in the form the request router compares against (the raw
	// path when the request's path needed escaping, else the decoded path).
	discoveryPath string
	jwksPath      string
	metrics       *metrics
	responses     responses
	current       atomic.Pointer[published]
}

// New validates cfg and returns a server that answers 503 for the documents until the first
// Publish.
func New(cfg Config) (*Server, error) {
	if err := documents.ValidateIssuerURL(cfg.IssuerURL); err != nil {
		return nil, fmt.Errorf("configuring the document server: %w", err)
	}
	prefix := documents.PathPrefix(cfg.IssuerURL)
	discoveryPath, err := routePath(prefix + documents.DiscoveryPath)
	if err != nil {
		return nil, fmt.Errorf("configuring the document server for issuer %q: %w", cfg.IssuerURL, err)
	}
	jwksPath, err := routePath(prefix + documents.JWKSPath)
	if err != nil {
		return nil, fmt.Errorf("configuring the document server for issuer %q: %w", cfg.IssuerURL, err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := newMetrics()
	if cfg.Registerer != nil {
		if err := m.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("registering the document server's metrics: %w", err)
		}
	}
	return &Server{
		logger:        logger,
		discoveryPath: discoveryPath,
		jwksPath:      jwksPath,
		metrics:       m,
		responses:     newResponses(),
	}, nil
}

// routePath turns an escaped URL path into the string a request for it is routed by: net/url
// parses the request target exactly this way, and the router (like chi) looks at RawPath when it
// is set and at Path otherwise.
func routePath(escaped string) (string, error) {
	u, err := url.Parse(escaped)
	if err != nil {
		return "", fmt.Errorf("parsing document path %q: %w", escaped, err)
	}
	p := u.Path
	if u.RawPath != "" {
		p = u.RawPath
	}
	// chi reads these as parameters and wildcards; no real issuer has them in its path.
	if strings.ContainsAny(p, "{}*") {
		return "", fmt.Errorf("document path %q: an issuer path containing '{', '}' or '*' is not supported", p)
	}
	return p, nil
}

// Publish makes d the served documents, atomically: a request sees either the old or the new
// pair, never one of each. A nil d is ignored, because un-publishing would make every relying
// party fail; so is a generation older than the one served, so that a late, out-of-order call can
// never roll back a key rotation.
func (s *Server) Publish(d *documents.Set) {
	if d == nil {
		s.logger.Warn("ignoring an attempt to publish no documents; keeping the published ones")
		return
	}
	next := newPublished(d)
	for {
		prev := s.current.Load()
		if prev != nil && d.Generation < prev.set.Generation {
			s.logger.Warn("ignoring documents older than the published ones",
				"generation", d.Generation, "publishedGeneration", prev.set.Generation)
			return
		}
		if s.current.CompareAndSwap(prev, next) {
			break
		}
	}
	s.metrics.published(d)
	s.logger.Info("publishing documents",
		"generation", d.Generation, "kids", d.Keys.KeyIDs(),
		"jwksETag", d.JWKS.ETag, "discoveryETag", d.Discovery.ETag)
}

// Current returns the published documents, or nil before the first Publish.
func (s *Server) Current() *documents.Set {
	p := s.current.Load()
	if p == nil {
		return nil
	}
	return p.set
}
