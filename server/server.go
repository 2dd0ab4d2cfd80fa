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
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
)

// Config configures a Server.
type Config struct {
	// IssuerURL is the server's own issuer, byte for byte the tokens' iss: its path is the prefix
	// below which the documents are served (documents.PathPrefix), and Publish and Current act on
	// it. Empty means none: every issuer is added with AddIssuer (fleet mode).
	IssuerURL string
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Registerer receives the server's metrics; nil leaves them unregistered. No global registry
	// is ever used, so several servers (tests, a future multi-issuer mode) can coexist.
	Registerer prometheus.Registerer
}

// Server serves the documents of one or more issuers, each under its own path. A single-cluster
// issuer is a server with one issuer (Config.IssuerURL); a fleet adds and removes issuers at
// runtime. Either way a request is routed by one lookup in an immutable table swapped atomically,
// so serving never takes a lock and never allocates.
type Server struct {
	logger    *slog.Logger
	metrics   *metrics
	responses responses

	mu     sync.Mutex // serialises changes of the route table
	routes atomic.Pointer[routeTable]
	main   *Issuer // Config.IssuerURL's issuer; nil in fleet mode
}

// routeTable maps each served document path, in the form the router compares against (see
// routePath), to its issuer and document. It is never modified once published.
type routeTable map[string]routeEntry

type routeEntry struct {
	issuer *Issuer
	kind   docKind
}

// Issuer is one issuer served by a Server: its two document paths and its published documents.
type Issuer struct {
	srv    *Server
	url    string
	logger *slog.Logger
	// discoveryPath and jwksPath are in the form the request router compares against (the raw
	// path when the request's path needed escaping, else the decoded path).
	discoveryPath string
	jwksPath      string
	// main issuers report their publications in the server-wide keyset metrics; a fleet's
	// issuers have per-cluster metrics of their own.
	main    bool
	current atomic.Pointer[published]
}

// ErrPathTaken is returned (wrapped) by AddIssuer when another issuer already serves the paths.
var ErrPathTaken = errors.New("another issuer already serves this path")

// New validates cfg and returns a server that answers 503 for its issuer's documents until the
// first Publish (and 404 everywhere when cfg names no issuer, until AddIssuer).
func New(cfg Config) (*Server, error) {
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
	s := &Server{logger: logger, metrics: m, responses: newResponses()}
	s.routes.Store(&routeTable{})
	if cfg.IssuerURL != "" {
		i, err := s.addIssuer(cfg.IssuerURL, true)
		if err != nil {
			return nil, err
		}
		s.main = i
	}
	return s, nil
}

// AddIssuer starts serving issuerURL's documents: 503 until its first Publish. It fails when the
// URL is not a valid issuer or when another issuer already serves the same paths (ErrPathTaken):
// two issuers never share a document.
func (s *Server) AddIssuer(issuerURL string) (*Issuer, error) {
	return s.addIssuer(issuerURL, false)
}

func (s *Server) addIssuer(issuerURL string, main bool) (*Issuer, error) {
	if err := documents.ValidateIssuerURL(issuerURL); err != nil {
		return nil, fmt.Errorf("configuring the document server: %w", err)
	}
	prefix := documents.PathPrefix(issuerURL)
	discoveryPath, err := routePath(prefix + documents.DiscoveryPath)
	if err != nil {
		return nil, fmt.Errorf("configuring the document server for issuer %q: %w", issuerURL, err)
	}
	jwksPath, err := routePath(prefix + documents.JWKSPath)
	if err != nil {
		return nil, fmt.Errorf("configuring the document server for issuer %q: %w", issuerURL, err)
	}
	i := &Issuer{srv: s, url: issuerURL, discoveryPath: discoveryPath, jwksPath: jwksPath, main: main, logger: s.logger}
	if !main {
		i.logger = s.logger.With("issuer", issuerURL)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.routes.Load()
	for _, p := range []string{discoveryPath, jwksPath} {
		if e, taken := old[p]; taken {
			return nil, fmt.Errorf("serving issuer %q: path %s: %w (issuer %q)", issuerURL, p, ErrPathTaken, e.issuer.url)
		}
	}
	next := make(routeTable, len(old)+2)
	for p, e := range old {
		next[p] = e
	}
	next[discoveryPath] = routeEntry{issuer: i, kind: kindDiscovery}
	next[jwksPath] = routeEntry{issuer: i, kind: kindJWKS}
	s.routes.Store(&next)
	return i, nil
}

// RemoveIssuer stops serving i: its paths answer 404 from the next request on. Removing an issuer
// that is not served does nothing.
func (s *Server) RemoveIssuer(i *Issuer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.routes.Load()
	if e, ok := old[i.jwksPath]; !ok || e.issuer != i {
		return
	}
	next := make(routeTable, len(old))
	for p, e := range old {
		if e.issuer != i {
			next[p] = e
		}
	}
	s.routes.Store(&next)
}

// Issuers is the number of issuers served.
func (s *Server) Issuers() int { return len(*s.routes.Load()) / int(numKinds) }

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

// Publish publishes d for the server's own issuer (Config.IssuerURL); see Issuer.Publish.
func (s *Server) Publish(d *documents.Set) {
	if s.main == nil {
		s.logger.Error("ignoring documents published to a server without an issuer of its own")
		return
	}
	s.main.Publish(d)
}

// Current returns the server's own issuer's published documents, or nil before the first Publish
// (and always in fleet mode).
func (s *Server) Current() *documents.Set {
	if s.main == nil {
		return nil
	}
	return s.main.Current()
}

// URL is the issuer URL.
func (i *Issuer) URL() string { return i.url }

// Publish makes d the served documents, atomically: a request sees either the old or the new
// pair, never one of each. A nil d is ignored, because un-publishing would make every relying
// party fail; so is a generation older than the one served, so that a late, out-of-order call can
// never roll back a key rotation.
func (i *Issuer) Publish(d *documents.Set) {
	if d == nil {
		i.logger.Warn("ignoring an attempt to publish no documents; keeping the published ones")
		return
	}
	next := newPublished(d)
	for {
		prev := i.current.Load()
		if prev != nil && d.Generation < prev.set.Generation {
			i.logger.Warn("ignoring documents older than the published ones",
				"generation", d.Generation, "publishedGeneration", prev.set.Generation)
			return
		}
		if i.current.CompareAndSwap(prev, next) {
			break
		}
	}
	if i.main {
		i.srv.metrics.published(d)
	}
	i.logger.Info("publishing documents",
		"generation", d.Generation, "kids", d.Keys.KeyIDs(),
		"jwksETag", d.JWKS.ETag, "discoveryETag", d.Discovery.ETag)
}

// Current returns the published documents, or nil before the first Publish.
func (i *Issuer) Current() *documents.Set {
	p := i.current.Load()
	if p == nil {
		return nil
	}
	return p.set
}
