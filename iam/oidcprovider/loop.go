package oidcprovider

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Loop keeps the provider registered: it reconciles at once, then every Interval; after a failure
// it retries sooner (from RetryMin, doubling up to Interval).
type Loop struct {
	reconciler *Reconciler
	desired    func(context.Context) (Desired, error)
	interval   time.Duration
	retryMin   time.Duration
	logger     *slog.Logger

	mu     sync.Mutex
	status Status
}

// LoopConfig configures a Loop.
type LoopConfig struct {
	// Desired is called before every reconcile (it fetches the thumbprints the endpoints present
	// now, unless they are pinned).
	Desired func(context.Context) (Desired, error)
	// Interval between reconciles; zero means 10 minutes.
	Interval time.Duration
	// RetryMin is the first retry delay after a failure; zero means 15 seconds.
	RetryMin time.Duration
	Logger   *slog.Logger
}

// NewLoop returns a loop reconciling with r.
func NewLoop(r *Reconciler, cfg LoopConfig) *Loop {
	l := &Loop{reconciler: r, desired: cfg.Desired, interval: cfg.Interval, retryMin: cfg.RetryMin, logger: cfg.Logger}
	if l.interval <= 0 {
		l.interval = 10 * time.Minute
	}
	if l.retryMin <= 0 {
		l.retryMin = 15 * time.Second
	}
	l.retryMin = min(l.retryMin, l.interval)
	l.status.Drift = make(map[string]uint64, len(DriftKinds()))
	for _, k := range DriftKinds() {
		l.status.Drift[k] = 0
	}
	return l
}

// Status is what the loop has done so far, for /readyz and the metrics.
type Status struct {
	// ARN of the provider, once known.
	ARN string `json:"arn,omitempty"`
	// Thumbprints and Audiences registered after the last successful reconcile.
	Thumbprints []string `json:"thumbprints,omitempty"`
	Audiences   []string `json:"audiences,omitempty"`
	// LastAttempt and LastSuccess are zero until they happen.
	LastAttempt  time.Time     `json:"lastAttempt,omitzero"`
	LastSuccess  time.Time     `json:"lastSuccess,omitzero"`
	LastDuration time.Duration `json:"lastDurationNanoseconds"`
	// LastDrift is what the last successful reconcile found and corrected; empty when nothing.
	LastDrift []string `json:"lastDrift"`
	LastError string   `json:"lastError,omitempty"`
	// Reconciles and Errors count attempts and failed attempts.
	Reconciles uint64 `json:"reconciles"`
	Errors     uint64 `json:"errors"`
	// Drift counts corrected differences by kind (DriftKinds).
	Drift map[string]uint64 `json:"drift"`
}

// Status returns a copy of the current status.
func (l *Loop) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.status
	s.Thumbprints = slices.Clone(s.Thumbprints)
	s.Audiences = slices.Clone(s.Audiences)
	s.LastDrift = slices.Clone(s.LastDrift)
	s.Drift = make(map[string]uint64, len(l.status.Drift))
	for k, v := range l.status.Drift {
		s.Drift[k] = v
	}
	return s
}

// Run reconciles until ctx ends; it returns nil then. Failures are logged and retried, never
// returned: serving the documents matters more than registering them.
func (l *Loop) Run(ctx context.Context) error {
	delay := time.Duration(0)
	backoff := l.backoff()
	for {
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
		if err := l.Once(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			delay = backoff.Step()
			l.logger.Error("IAM OIDC provider reconcile failed", "error", err, "retryIn", delay)
			continue
		}
		delay, backoff = l.interval, l.backoff()
	}
}

// backoff is the wait after a failed reconcile: RetryMin doubling to Interval, without jitter
// (only the leader registers the provider). Steps is unbounded in practice, so only Cap ends the
// doubling; failures are retried until ctx ends.
func (l *Loop) backoff() wait.Backoff {
	return wait.Backoff{Duration: l.retryMin, Factor: 2, Cap: l.interval, Steps: math.MaxInt32}
}

// Once runs one reconcile and records it in the status.
func (l *Loop) Once(ctx context.Context) error {
	start := time.Now()
	p, err := l.once(ctx)
	took := time.Since(start)

	l.mu.Lock()
	defer l.mu.Unlock()
	l.status.LastAttempt = start
	l.status.LastDuration = took
	l.status.Reconciles++
	if err != nil {
		l.status.Errors++
		l.status.LastError = err.Error()
		return err
	}
	l.status.LastSuccess = start
	l.status.LastError = ""
	l.status.ARN = p.ARN
	l.status.LastDrift = p.Drift()
	for _, k := range l.status.LastDrift {
		l.status.Drift[k]++
	}
	l.status.Audiences = p.Desired.Audiences
	l.status.Thumbprints = p.Thumbprints // set on creation and on change
	if l.status.Thumbprints == nil {
		l.status.Thumbprints = p.Current.Thumbprints
	}
	if len(l.status.LastDrift) > 0 {
		l.logger.Info("IAM OIDC provider reconciled", "arn", p.ARN, "drift", l.status.LastDrift, "took", took)
	} else {
		l.logger.Debug("IAM OIDC provider up to date", "arn", p.ARN, "took", took)
	}
	return nil
}

func (l *Loop) once(ctx context.Context) (*Plan, error) {
	d, err := l.desired(ctx)
	if err != nil {
		return nil, fmt.Errorf("working out the desired IAM OIDC provider: %w", err)
	}
	return l.reconciler.Reconcile(ctx, d)
}
