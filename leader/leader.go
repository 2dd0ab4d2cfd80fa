// Package leader runs background work on one replica at a time. Every replica serves the documents
// and the admin API; work that must not run twice at once — pruning expired keys, recording keys
// that left the signing-key Secret, scheduled rotation, mirroring documents to a bucket,
// registering the issuer with IAM — is registered as a task and runs only while this replica holds
// a coordination.k8s.io Lease (client-go's Lease-based leader election). When the leader dies, a
// standby acquires the Lease once it has not been renewed for the lease duration and starts the
// tasks; a leader that shuts down gracefully releases the Lease at once.
//
// Without election (a single replica) the Elector leads from the start.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Defaults of client-go's core components.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// Config configures an Elector.
type Config struct {
	// Enabled elects a leader with a Lease. When false this replica always leads.
	Enabled bool
	// Client, Namespace and Name locate the Lease (needed when Enabled).
	Client    coordinationv1client.LeasesGetter
	Namespace string
	Name      string
	// Identity names this replica in the Lease; empty means hostname + a random suffix.
	Identity      string
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	Logger        *slog.Logger
}

// Task is background work that runs while this replica leads. Its context ends when leadership
// is lost or the process stops; it should then return promptly. A task that returns an error
// while still leading is restarted with backoff; one that returns nil is done for this term.
type Task func(ctx context.Context) error

// Elector runs registered tasks while this replica leads.
type Elector struct {
	cfg    Config
	logger *slog.Logger

	mu      sync.Mutex
	tasks   []namedTask
	started bool

	leading atomic.Bool
	since   atomic.Pointer[time.Time]
	holder  atomic.Pointer[string]
	terms   atomic.Int64
}

type namedTask struct {
	name string
	run  Task
}

// New checks cfg and returns an Elector.
func New(cfg Config) (*Elector, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Identity == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "kube-oidc-issuer"
		}
		cfg.Identity = host + "_" + rand.String(8)
	}
	if cfg.Enabled {
		var errs []error
		if cfg.Client == nil {
			errs = append(errs, errors.New("no Kubernetes client"))
		}
		if cfg.Namespace == "" || cfg.Name == "" {
			errs = append(errs, errors.New("the Lease needs a namespace and a name"))
		}
		if cfg.LeaseDuration == 0 {
			cfg.LeaseDuration = DefaultLeaseDuration
		}
		if cfg.RenewDeadline == 0 {
			cfg.RenewDeadline = DefaultRenewDeadline
		}
		if cfg.RetryPeriod == 0 {
			cfg.RetryPeriod = DefaultRetryPeriod
		}
		// client-go's own rule, checked here to name the flags.
		if cfg.LeaseDuration <= cfg.RenewDeadline {
			errs = append(errs, fmt.Errorf("lease duration %s must be longer than the renew deadline %s", cfg.LeaseDuration, cfg.RenewDeadline))
		}
		if float64(cfg.RenewDeadline) <= leaderelection.JitterFactor*float64(cfg.RetryPeriod) {
			errs = append(errs, fmt.Errorf("renew deadline %s must be longer than %.1f × the retry period %s", cfg.RenewDeadline, leaderelection.JitterFactor, cfg.RetryPeriod))
		}
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("leader election: %w", err)
		}
	}
	e := &Elector{cfg: cfg, logger: cfg.Logger.With("component", "leader-election", "identity", cfg.Identity)}
	return e, nil
}

// Go registers a task to run while this replica leads. Register every task before Run.
func (e *Elector) Go(name string, task Task) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		panic("leader: Go called after Run: register tasks before running the elector")
	}
	e.tasks = append(e.tasks, namedTask{name: name, run: task})
}

// Status is what /readyz and /metrics show about leadership.
type Status struct {
	Enabled  bool      `json:"enabled"`
	Leader   bool      `json:"leader"`
	Identity string    `json:"identity"`
	Holder   string    `json:"holder,omitempty"`
	Since    time.Time `json:"since,omitzero"`
	// Terms counts how often this replica became leader since it started.
	Terms int64 `json:"terms"`
}

// Status reports whether this replica leads now.
func (e *Elector) Status() Status {
	s := Status{Enabled: e.cfg.Enabled, Leader: e.leading.Load(), Identity: e.cfg.Identity, Terms: e.terms.Load()}
	if h := e.holder.Load(); h != nil {
		s.Holder = *h
	}
	if t := e.since.Load(); t != nil && s.Leader {
		s.Since = *t
	}
	return s
}

// IsLeader reports whether this replica leads now.
func (e *Elector) IsLeader() bool { return e.leading.Load() }

// Run elects and runs the tasks while leading, until ctx is done. A replica that loses the Lease
// stops its tasks, waits for them, and stands for election again. On return the Lease is released
// if held. It returns nil when ctx is done.
func (e *Elector) Run(ctx context.Context) error {
	e.mu.Lock()
	e.started = true
	tasks := e.tasks
	e.mu.Unlock()

	if !e.cfg.Enabled {
		e.holder.Store(&e.cfg.Identity)
		e.lead(ctx, tasks)
		return nil
	}
	// client-go logs through the logr logger in the context.
	ctx = logr.NewContext(ctx, logr.FromSlogHandler(e.logger.Handler()))
	for ctx.Err() == nil {
		if err := e.runTerm(ctx, tasks); err != nil {
			return err
		}
	}
	return nil
}

// runTerm runs one client-go LeaderElector: acquire, lead until the Lease is lost or ctx ends.
func (e *Elector) runTerm(ctx context.Context, tasks []namedTask) error {
	var (
		mu      sync.Mutex
		over    bool
		running sync.WaitGroup
	)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: e.cfg.Namespace, Name: e.cfg.Name},
			Client:     e.cfg.Client,
			LockConfig: resourcelock.ResourceLockConfig{Identity: e.cfg.Identity},
			Labels:     map[string]string{"app.kubernetes.io/managed-by": "kube-oidc-issuer"},
		},
		LeaseDuration:   e.cfg.LeaseDuration,
		RenewDeadline:   e.cfg.RenewDeadline,
		RetryPeriod:     e.cfg.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            e.cfg.Namespace + "/" + e.cfg.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				// client-go starts this in a goroutine that may run after the term ended.
				mu.Lock()
				if over {
					mu.Unlock()
					return
				}
				running.Add(1)
				mu.Unlock()
				defer running.Done()
				e.lead(lctx, tasks)
			},
			OnStoppedLeading: func() {},
			OnNewLeader: func(id string) {
				e.holder.Store(&id)
				e.logger.Info("leader observed", "holder", id, "self", id == e.cfg.Identity)
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	le.Run(ctx)
	mu.Lock()
	over = true
	mu.Unlock()
	running.Wait()
	return nil
}

// lead runs every task until ctx ends, restarting failed ones with backoff.
func (e *Elector) lead(ctx context.Context, tasks []namedTask) {
	now := time.Now()
	e.since.Store(&now)
	e.terms.Add(1)
	e.leading.Store(true)
	e.logger.Info("leading: starting background work", "tasks", len(tasks))
	defer func() {
		e.leading.Store(false)
		e.logger.Info("no longer leading: background work stopped")
	}()
	var wg sync.WaitGroup
	for _, t := range tasks {
		wg.Go(func() { e.runTask(ctx, t) })
	}
	<-ctx.Done()
	wg.Wait()
}

func (e *Elector) runTask(ctx context.Context, t namedTask) {
	backoff := taskBackoff()
	for {
		err := t.run(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			e.logger.Info("background task finished", "task", t.name)
			return
		}
		delay := backoff.Step()
		e.logger.Error("background task failed; restarting", "task", t.name, "error", err, "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// taskBackoff is the wait before restarting a failed task: 1s doubling to 30s, without jitter
// (each task runs on one replica only, so there is no crowd to spread). Steps is unbounded in
// practice, so only Cap ends the doubling; a task is restarted for as long as this replica leads.
func taskBackoff() wait.Backoff {
	return wait.Backoff{Duration: time.Second, Factor: 2, Cap: 30 * time.Second, Steps: math.MaxInt32}
}
