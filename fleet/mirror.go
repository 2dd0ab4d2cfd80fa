package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/issuer"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage"
)

// MirrorConfig configures Mirrors.
type MirrorConfig struct {
	// Sinks returns the sinks of one cluster's issuer URL (each at that issuer's path).
	Sinks func(issuerURL string) ([]storage.Sink, error)
	// Interval is how often every cluster's objects are checked and repaired without a change.
	Interval time.Duration
	// Workers upload concurrently; 0 means 2.
	Workers int
	Logger  *slog.Logger
}

// Mirrors mirrors every cluster's documents with a fixed set of workers sharing one queue: a
// cluster costs an entry in a map, not a goroutine. A new document set is queued (Publish never
// blocks); a removed cluster's objects are deleted, discovery first. Only Run uploads: run it on
// the leader.
type Mirrors struct {
	cfg    MirrorConfig
	logger *slog.Logger

	mu     sync.Mutex
	queue  workqueue.TypedRateLimitingInterface[string] // nil while not running
	byURL  map[string]*mirrored
	failed map[string]string // issuer URL → last error, while failing
}

type mirrored struct {
	cluster ClusterRef
	sinks   []storage.Sink
	latest  *documents.Set
	removed bool
	done    *documents.Set // the set last written everywhere
}

// NewMirrors validates cfg.
func NewMirrors(cfg MirrorConfig) (*Mirrors, error) {
	if cfg.Sinks == nil || cfg.Interval <= 0 {
		return nil, errors.New("fleet mirrors: Sinks and a positive Interval are required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Mirrors{cfg: cfg, logger: cfg.Logger.With("component", "fleet-mirror"), byURL: map[string]*mirrored{}, failed: map[string]string{}}, nil
}

// ForCluster implements ClusterPublishers.
func (m *Mirrors) ForCluster(c ClusterRef, issuerURL string) ([]issuer.Publisher, error) {
	sinks, err := m.cfg.Sinks(issuerURL)
	if err != nil {
		return nil, fmt.Errorf("mirror sinks of %s: %w", issuerURL, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byURL[issuerURL] = &mirrored{cluster: c, sinks: sinks}
	return []issuer.Publisher{clusterMirror{m: m, url: issuerURL}}, nil
}

// Removed implements ClusterPublishers: the cluster's objects are deleted.
func (m *Mirrors) Removed(_ ClusterRef, issuerURL string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.byURL[issuerURL]; e != nil {
		e.removed = true
		m.addLocked(issuerURL)
	}
}

type clusterMirror struct {
	m   *Mirrors
	url string
}

func (c clusterMirror) Publish(set *documents.Set) {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	if e := c.m.byURL[c.url]; e != nil && !e.removed {
		e.latest = set
		c.m.addLocked(c.url)
	}
}

func (m *Mirrors) addLocked(url string) {
	if m.queue != nil {
		m.queue.Add(url)
	}
}

// Run uploads until ctx ends. It may be run again after it returned (leadership regained).
func (m *Mirrors) Run(ctx context.Context) error {
	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 5*time.Minute),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "fleet-mirror"})
	m.mu.Lock()
	m.queue = q
	for url := range m.byURL {
		q.Add(url) // a new leader checks everything once
	}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.queue = nil
		m.mu.Unlock()
	}()
	runWorkers(ctx, q, m.cfg.Workers, m.cfg.Interval, m.processNext, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		for url, e := range m.byURL {
			e.done = nil // repair drift: check the stored objects again
			q.Add(url)
		}
	})
	return nil
}

func (m *Mirrors) processNext(ctx context.Context, q queue) bool {
	url, quit := q.Get()
	if quit {
		return false
	}
	defer q.Done(url)
	if err := m.sync(ctx, url); err != nil {
		if ctx.Err() != nil {
			return true
		}
		m.mu.Lock()
		first := m.failed[url] == ""
		m.failed[url] = err.Error()
		m.mu.Unlock()
		if first {
			m.logger.Warn("mirroring a cluster's documents failed; retrying with backoff", "issuer", url, "error", err)
		}
		q.AddRateLimited(url)
		return true
	}
	q.Forget(url)
	m.mu.Lock()
	if msg, was := m.failed[url]; was {
		delete(m.failed, url)
		m.logger.Info("mirroring a cluster's documents recovered", "issuer", url, "lastError", msg)
	}
	m.mu.Unlock()
	return true
}

func (m *Mirrors) sync(ctx context.Context, url string) error {
	m.mu.Lock()
	e := m.byURL[url]
	if e == nil {
		m.mu.Unlock()
		return nil
	}
	set, removed, done, sinks := e.latest, e.removed, e.done, e.sinks
	m.mu.Unlock()

	if removed {
		for _, s := range sinks {
			if _, err := storage.Unpublish(ctx, s); err != nil {
				return err
			}
		}
		m.mu.Lock()
		if m.byURL[url] == e {
			delete(m.byURL, url)
		}
		m.mu.Unlock()
		m.logger.Info("removed a cluster's mirrored documents", "issuer", url, "cluster", e.cluster.String())
		return nil
	}
	if set == nil || set == done {
		return nil
	}
	var errs []error
	for _, s := range sinks {
		res, err := storage.Publish(ctx, s, set)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(res.Written) > 0 {
			m.logger.Info("mirrored a cluster's documents", "issuer", url, "sink", s.String(), "written", res.Written, "generation", set.Generation)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	m.mu.Lock()
	if e.latest == set {
		e.done = set
	}
	m.mu.Unlock()
	return nil
}

// MirrorStatus is shown on /readyz.
type MirrorStatus struct {
	Clusters int               `json:"clusters"`
	Failing  int               `json:"failing"`
	Errors   map[string]string `json:"errors,omitempty"` // at most maxListed, by issuer URL
}

// Status summarises the mirrors.
func (m *Mirrors) Status() MirrorStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := MirrorStatus{Clusters: len(m.byURL), Failing: len(m.failed)}
	urls := make([]string, 0, len(m.failed))
	for u := range m.failed {
		urls = append(urls, u)
	}
	slices.SortFunc(urls, strings.Compare)
	for _, u := range urls[:min(len(urls), maxListed)] {
		if st.Errors == nil {
			st.Errors = map[string]string{}
		}
		st.Errors[u] = m.failed[u]
	}
	return st
}
