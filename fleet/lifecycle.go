package fleet

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"k8s.io/client-go/util/workqueue"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
)

// StateSuffix ends the name of a cluster's lifecycle state Secret, `<cluster>-oidc-keys`, kept next
// to its `<cluster>-sa` and labelled with the cluster like Cluster API's own Secrets (so the
// fleet's one watch sees it, and `clusterctl move` carries it along with the cluster).
const StateSuffix = "-oidc-keys"

// The labels a state Secret created by the lifecycle carries (lifecycle.Store).
const (
	lifecycleManagedByLabel = "app.kubernetes.io/managed-by"
	lifecycleManagedBy      = "kube-oidc-issuer"
)

// LifecycleConfig is every cluster's key lifecycle configuration.
type LifecycleConfig struct {
	// Base is copied for each cluster; its StateSecret, SigningSecret, StateLabels and Logger are
	// set per cluster. It must be Secret mode (Signer false): a Cluster API control plane reads
	// its signing key from `<cluster>-sa`, which promote writes.
	Base lifecycle.Config
}

func (c *cluster) stateKey() string { return c.ref.Namespace + "/" + c.ref.Name + StateSuffix }

func (f *Fleet) newManager(c *cluster, logger *slog.Logger) (*lifecycle.Manager, error) {
	cfg := f.cfg.Lifecycle.Base
	if cfg.Signer {
		return nil, errors.New("fleet key lifecycle: signer mode is not supported")
	}
	cfg.StateSecret = lifecycle.Ref{Namespace: c.ref.Namespace, Name: c.ref.Name + StateSuffix}
	cfg.SigningSecret = lifecycle.Ref{Namespace: c.ref.Namespace, Name: c.ref.Name + SigningKeySuffix}
	cfg.StateLabels = map[string]string{ClusterNameLabel: c.ref.Name}
	cfg.Logger = logger
	if cfg.Now == nil {
		cfg.Now = f.cfg.Now
	}
	return lifecycle.NewManager(cfg)
}

// observeStateLocked feeds the cluster's state Secret, as cached, to its issuer: no Secret is the
// empty state (nothing staged, nothing retained); a Secret that does not parse keeps the last
// good keys published.
func (f *Fleet) observeStateLocked(c *cluster) {
	o := keys.Observation{AllowEmpty: true}
	fs, exists, err := f.lookupLocked(c.stateKey())
	switch {
	case err != nil:
		o.Err = err
	case exists && fs.state:
		o.Keys, o.Err = fs.keys, fs.err
	}
	c.issuer.Observe(c.stateSource, o)
}

// stateChangedLocked handles an event of a state Secret: its cluster's issuer is told, and the
// leader reconciles the cluster.
func (f *Fleet) stateChangedLocked(stateKey string) {
	ns, name, _ := strings.Cut(stateKey, "/")
	c := f.clusters[ns+"/"+strings.TrimSuffix(name, StateSuffix)+SigningKeySuffix]
	if c == nil || c.manager == nil {
		return // a state Secret of a cluster not served (yet): read when the cluster is admitted
	}
	f.observeStateLocked(c)
	f.kickLifecycleLocked(c)
}

// kickLifecycleLocked asks the leader's lifecycle loop (when running) to reconcile c soon.
func (f *Fleet) kickLifecycleLocked(c *cluster) {
	if f.lifecycleQueue != nil && c.manager != nil {
		f.lifecycleQueue.Add(c.secretKey)
	}
}

// Lifecycle returns the key lifecycle of a served cluster whose Secret exists, for the admin API.
func (f *Fleet) Lifecycle(namespace, clusterName string) (*lifecycle.Manager, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.clusters[namespace+"/"+clusterName+SigningKeySuffix]
	if c == nil || c.manager == nil || !c.deletedAt.IsZero() || c.ref.Name != clusterName {
		return nil, false
	}
	return c.manager, true
}

// lifecycleResync bounds how long the loop waits for a cluster whose state asks for nothing sooner.
const lifecycleResync = time.Hour

// RunLifecycle is the leader's background work of every cluster's lifecycle (departures from its
// `<cluster>-sa`, pruning, scheduled rotation), on one queue and one worker. A cluster is
// reconciled when its Secrets change and when its state's next deadline comes; clusters without
// a state Secret are skipped unless scheduled rotation is on (which creates one). Run it on the
// leader.
func (f *Fleet) RunLifecycle(ctx context.Context) error {
	if f.cfg.Lifecycle == nil {
		<-ctx.Done()
		return nil
	}
	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](2*time.Second, lifecycleResync),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "fleet-lifecycle"})
	f.mu.Lock()
	f.lifecycleQueue = q
	for key, c := range f.clusters {
		if c.manager != nil {
			q.Add(key)
		}
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.lifecycleQueue = nil
		f.mu.Unlock()
	}()
	go func() {
		<-ctx.Done()
		q.ShutDown()
	}()
	for {
		key, quit := q.Get()
		if quit {
			return nil
		}
		f.reconcileLifecycle(ctx, q, key)
		q.Done(key)
	}
}

func (f *Fleet) reconcileLifecycle(ctx context.Context, q workqueue.TypedRateLimitingInterface[string], key string) {
	f.mu.Lock()
	c := f.clusters[key]
	var hasState bool
	if c != nil {
		fs, exists, _ := f.lookupLocked(c.stateKey())
		hasState = exists && fs.state
	}
	f.mu.Unlock()
	if c == nil || c.manager == nil || !c.deletedAt.IsZero() {
		q.Forget(key)
		return
	}
	if !hasState && f.cfg.Lifecycle.Base.RotateEvery <= 0 {
		q.Forget(key) // nothing to do until an operator stages a key
		return
	}
	next, err := c.manager.Reconcile(ctx)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		f.logger.Warn("a cluster's key lifecycle reconcile failed; retrying", "cluster", c.ref.String(), "error", err)
		q.AddRateLimited(key)
		return
	}
	q.Forget(key)
	q.AddAfter(key, min(max(time.Until(next), time.Second), lifecycleResync))
}
