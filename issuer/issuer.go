// Package issuer is one issuer's pipeline: key sources feed a collector, which merges their last
// good keys into one key set; each new set is rendered into the two documents once, and the same
// bytes are handed to every publisher (the HTTP server's issuer, the mirrors). A single-cluster
// `serve` runs one Issuer; a fleet runs one per cluster, fed from a shared Secret watch.
//
// Data only flows downstream: nothing here reads back what a publisher did with the documents.
package issuer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// Publisher receives every rendered document set. Publish must not block: the HTTP server swaps
// a pointer, a mirror queues the set for its own loop.
type Publisher interface {
	Publish(*documents.Set)
}

// Config configures an Issuer.
type Config struct {
	// Documents says what to render (issuer URL, JWKS URI, max-age, legacy empty kids).
	Documents documents.Config
	// Sources are run by Run. FedSources are named sources whose observations the caller reports
	// with Observe (a fleet's shared watch). Together there must be at least one.
	Sources    []keys.Source
	FedSources []string
	Publishers []Publisher
	// OnKeySet, if set, is told every key set that was rendered and published.
	OnKeySet func(keys.Set)
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Now defaults to time.Now; it stamps the rendered documents.
	Now func() time.Time
}

// Issuer is one running pipeline.
type Issuer struct {
	cfg       Config
	logger    *slog.Logger
	collector *keys.Collector

	mu         sync.Mutex
	generation uint64
	current    *documents.Set
}

// New validates cfg and builds the pipeline; nothing is published until every source has
// delivered good keys once.
func New(cfg Config) (*Issuer, error) {
	if err := cfg.Documents.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	i := &Issuer{cfg: cfg, logger: cfg.Logger}
	var err error
	switch {
	case len(cfg.Sources) > 0 && len(cfg.FedSources) > 0:
		err = errors.New("an issuer's sources are either run by it or fed to it, not both")
	case len(cfg.FedSources) > 0:
		i.collector, err = keys.NewFedCollector(cfg.Logger, i.keySetChanged, cfg.FedSources...)
	default:
		i.collector, err = keys.NewCollector(cfg.Logger, i.keySetChanged, cfg.Sources...)
	}
	if err != nil {
		return nil, fmt.Errorf("issuer %s: %w", cfg.Documents.IssuerURL, err)
	}
	return i, nil
}

// Run runs the sources until ctx ends (see keys.Collector.Run). An issuer with fed sources does
// not need it.
func (i *Issuer) Run(ctx context.Context) error { return i.collector.Run(ctx) }

// Observe reports an observation of a fed source.
func (i *Issuer) Observe(source string, o keys.Observation) { i.collector.Observe(source, o) }

// Status is every source's status, in configuration order.
func (i *Issuer) Status() []keys.SourceStatus { return i.collector.Status() }

// Ready reports whether every source has delivered good keys (so the documents are published).
func (i *Issuer) Ready() bool {
	for _, s := range i.collector.Status() {
		if !s.Ready {
			return false
		}
	}
	return true
}

// Current is the latest rendered documents, or nil before the first.
func (i *Issuer) Current() *documents.Set {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.current
}

// URL is the issuer URL.
func (i *Issuer) URL() string { return i.cfg.Documents.IssuerURL }

// keySetChanged renders each new key set exactly once and hands it to every publisher. The
// collector calls it serialised, in order.
func (i *Issuer) keySetChanged(set keys.Set) {
	i.mu.Lock()
	defer i.mu.Unlock()
	docs, err := documents.Render(i.cfg.Documents, set, i.generation+1, i.cfg.Now())
	if err != nil {
		// Only an empty set or a bad configuration fail here; keep what is published.
		i.logger.Error("rendering documents failed; keeping the published ones", "error", err)
		return
	}
	i.generation++
	i.current = docs
	for _, p := range i.cfg.Publishers {
		p.Publish(docs)
	}
	if i.cfg.OnKeySet != nil {
		i.cfg.OnKeySet(set)
	}
}
