// Package mirror keeps one storage.Sink in step with the issuer's documents: it takes each new
// documents.Set without ever blocking the caller, publishes it in the background (storage.Publish:
// JWKS first, unchanged objects skipped), retries failures with capped exponential backoff,
// re-publishes periodically to repair drift (a deleted or edited object), and reports its state
// as metrics and as a status for /readyz.
package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Defaults for Options.
const (
	DefaultReconcileInterval = 5 * time.Minute
	DefaultMinBackoff        = 200 * time.Millisecond
	DefaultMaxBackoff        = time.Minute
	DefaultAttemptTimeout    = 30 * time.Second
)

// Options tune a Mirror; zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// Metrics receives the mirror's measurements; nil records none.
	Metrics *Metrics
	// ReconcileInterval is how often the latest documents are re-published even if nothing
	// changed; unchanged objects cost one HEAD each.
	ReconcileInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed attempts (doubling, with jitter).
	MinBackoff, MaxBackoff time.Duration
	// AttemptTimeout bounds one publication, so that a hung endpoint cannot stall the mirror.
	AttemptTimeout time.Duration
}

// Mirror mirrors documents to one sink. Publish may be called from any goroutine; Run does the
// work.
type Mirror struct {
	sink    storage.Sink
	access  storage.AccessManager // nil when the sink has no access control
	opts    Options
	logger  *slog.Logger
	metrics sinkMetrics

	latest atomic.Pointer[documents.Set]
	wake   chan struct{}

	mu     sync.Mutex
	status Status
}

// Status is a mirror's state, shown in /readyz details.
type Status struct {
	Sink string `json:"sink"`
	// InSync means the latest documents are in the sink (as of the last attempt).
	InSync bool `json:"inSync"`
	// Generation is the last generation published successfully; Pending the newer one waiting.
	Generation          uint64    `json:"generation"`
	Pending             uint64    `json:"pendingGeneration,omitempty"`
	LastSuccess         time.Time `json:"lastSuccess,omitzero"`
	LastError           string    `json:"lastError,omitempty"`
	LastFailure         time.Time `json:"lastFailure,omitzero"`
	ConsecutiveFailures int       `json:"consecutiveFailures"`
	Failures            uint64    `json:"failures"`
	// PublicRead is the sink's report on anonymous access (S3 only).
	PublicRead *storage.AccessReport `json:"publicRead,omitempty"`
}

// New returns a mirror for sink. If sink is a storage.AccessManager, public read is ensured (or
// checked) after the first successful publication and after every reconcile; a failure to ensure
// it counts as a failed attempt and is retried.
func New(sink storage.Sink, opts Options) *Mirror {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ReconcileInterval <= 0 {
		opts.ReconcileInterval = DefaultReconcileInterval
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = DefaultAttemptTimeout
	}
	m := &Mirror{
		sink:    sink,
		opts:    opts,
		logger:  opts.Logger.With("sink", sink.String()),
		metrics: opts.Metrics.forSink(sink.String()),
		wake:    make(chan struct{}, 1),
		status:  Status{Sink: sink.String()},
	}
	m.access, _ = sink.(storage.AccessManager)
	return m
}

// Sink returns the mirrored sink.
func (m *Mirror) Sink() storage.Sink { return m.sink }

// Publish hands set to the mirror and returns at once. Only the newest set matters: one handed
// over while an older one is being published replaces it, and one older than the newest is
// ignored, so a late call can never roll back a key rotation.
func (m *Mirror) Publish(set *documents.Set) {
	if set == nil {
		return
	}
	for {
		prev := m.latest.Load()
		if prev != nil && set.Generation < prev.Generation {
			return
		}
		if m.latest.CompareAndSwap(prev, set) {
			break
		}
	}
	m.mu.Lock()
	if set.Generation != m.status.Generation {
		m.status.InSync = false
		m.status.Pending = set.Generation
	}
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default: // a wake-up is already pending; it will pick up the latest set
	}
}

// Status returns the mirror's current state.
func (m *Mirror) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.status
	if st.PublicRead != nil {
		pr := *st.PublicRead
		st.PublicRead = &pr
	}
	return st
}

// Run publishes until ctx is done, then returns nil.
func (m *Mirror) Run(ctx context.Context) error {
	// Start with a full publish: Run may begin a new leadership term on a replica that did not
	// write this mirror before, and must not leave drift until the first reconcile tick.
	select {
	case m.wake <- struct{}{}:
	default:
	}
	reconcile := time.NewTicker(m.opts.ReconcileInterval)
	defer reconcile.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop() // armed only after a failure
	defer retry.Stop()
	backoff := m.backoff()
	checkAccess := true
	pending := false
	for {
		reason := ""
		select {
		case <-ctx.Done():
			return nil
		case <-m.wake:
			reason = "documents changed"
		case <-reconcile.C:
			reason, checkAccess = "reconcile", true
		case <-retry.C:
			reason = "retry"
		}
		set := m.latest.Load()
		if set == nil {
			continue
		}
		if reason == "reconcile" && pending {
			continue // the retry timer is already on it
		}
		err := m.attempt(ctx, set, reason, checkAccess)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			pending, checkAccess, backoff = false, false, m.backoff()
			retry.Stop()
			continue
		}
		pending = true
		delay := backoff.Step()
		m.logger.Warn("mirroring failed; retrying (the issuer keeps serving)", "generation", set.Generation, "retryIn", delay.Round(time.Millisecond), "error", err)
		retry.Stop()
		retry.Reset(delay)
	}
}

// backoff is the wait between failed attempts: MinBackoff doubling to MaxBackoff, each wait
// spread over [d/2, d) so that replicas do not retry in lockstep. wait.Backoff's jitter only adds
// (a step lies in [Duration, Duration×(1+Jitter))), hence Duration and Cap are half the bounds
// with Jitter 1. Steps is unbounded in practice, so only Cap ends the doubling; the mirror retries
// until its context ends.
func (m *Mirror) backoff() wait.Backoff {
	return wait.Backoff{
		Duration: max(m.opts.MinBackoff/2, 1),
		Factor:   2,
		Jitter:   1,
		Cap:      max(m.opts.MaxBackoff/2, 1),
		Steps:    math.MaxInt32,
	}
}

// attempt runs one publication of set and records the outcome.
func (m *Mirror) attempt(ctx context.Context, set *documents.Set, reason string, checkAccess bool) error {
	ctx, cancel := context.WithTimeout(ctx, m.opts.AttemptTimeout)
	defer cancel()
	start := time.Now()

	res, err := storage.Publish(ctx, m.sink, set)
	var report *storage.AccessReport
	if err == nil && checkAccess && m.access != nil {
		// After the objects: a store that refuses the policy must not hold up the documents.
		rep, aerr := m.access.EnsurePublicRead(ctx, storage.Keys())
		report = &rep
		if aerr != nil {
			err = errors.Join(err, fmt.Errorf("ensuring public read: %w", aerr))
		}
	}
	took := time.Since(start)

	m.mu.Lock()
	defer m.mu.Unlock()
	if report != nil {
		m.noteAccess(m.status.PublicRead, report)
		m.status.PublicRead = report
		m.metrics.publicRead(report.Public)
	}
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return err // shutting down: not a failure of the sink
		}
		m.status.InSync = false
		m.status.Pending = m.latest.Load().Generation
		m.status.LastError = err.Error()
		m.status.LastFailure = time.Now()
		m.status.ConsecutiveFailures++
		m.status.Failures++
		m.metrics.failure(took)
		return err
	}
	// A newer set may have arrived meanwhile; it has woken Run and will be published next.
	newest := m.latest.Load()
	m.status.InSync = newest == nil || newest.Generation == set.Generation
	m.status.Generation = set.Generation
	m.status.Pending = 0
	if !m.status.InSync {
		m.status.Pending = newest.Generation
	}
	m.status.LastSuccess = time.Now()
	m.status.LastError = ""
	m.status.ConsecutiveFailures = 0
	m.metrics.success(took, set.Generation, len(res.Written))
	for _, e := range res.StatErrors {
		m.logger.Warn("could not read an existing object before writing it; unchanged documents will be rewritten on every publication", "error", e)
	}
	level := slog.LevelDebug
	if len(res.Written) > 0 {
		level = slog.LevelInfo
	}
	m.logger.Log(ctx, level, "mirrored documents", "reason", reason, "generation", set.Generation,
		"written", res.Written, "unchanged", res.Unchanged, "took", took.Round(time.Millisecond))
	return nil
}

// noteAccess logs the public-read report when it changes, so problems are visible without
// repeating them every reconcile.
func (m *Mirror) noteAccess(prev, cur *storage.AccessReport) {
	if prev != nil && prev.Public == cur.Public && fmt.Sprint(prev.Problems) == fmt.Sprint(cur.Problems) {
		return
	}
	if cur.Public {
		m.logger.Info("mirrored documents are publicly readable", "managedPolicy", cur.Managed)
		return
	}
	for _, p := range cur.Problems {
		m.logger.Warn("mirrored documents may not be publicly readable", "problem", p)
	}
}
