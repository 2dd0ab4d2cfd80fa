// Package fleet serves the issuer of every Cluster API cluster of a management cluster from one
// process. Cluster API keeps each workload cluster's service-account signing key in a Secret
// `<cluster>-sa` (labelled cluster.x-k8s.io/cluster-name) in the Cluster's namespace; the fleet
// watches those Secrets and runs one issuer pipeline (package issuer) per cluster, at the issuer
// URL its template gives the cluster, on one shared HTTP server.
//
// Nothing is per cluster but state: one informer per watched namespace (or one for all), one work
// queue and one worker, whatever the number of clusters. A cluster's keys are parsed as its Secret
// arrives (the informer's transform keeps the public keys, never the Secret), so the cache holds
// no private key and a 1,000-cluster fleet costs little more memory than one cluster.
//
// Isolation: a cluster's Secret only ever changes that cluster's documents. A bad Secret keeps the
// cluster's last good keys; a cluster whose name cannot be placed in a URL, or that the template
// maps onto another cluster's URL, is refused (log, Event, metric) and never served under another
// cluster's issuer; the issuer URL comes from the template alone, never from a request.
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

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/kubeevent"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/issuer"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys/kubesource"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/server"
)

// ClusterNameLabel is the label Cluster API puts on every Secret of a cluster.
const ClusterNameLabel = "cluster.x-k8s.io/cluster-name"

// SigningKeySuffix ends the name of a cluster's signing-key Secret: `<cluster>-sa`.
const SigningKeySuffix = "-sa"

// DefaultMaxClusters bounds the clusters served (and the per-cluster metric series).
const DefaultMaxClusters = 2000

// Routes is where the fleet serves its issuers: server.Server.
type Routes interface {
	AddIssuer(issuerURL string) (*server.Issuer, error)
	RemoveIssuer(*server.Issuer)
}

// ClusterPublishers gives a cluster's further publishers (mirrors) and is told when a cluster is
// removed for good. Publish must not block.
type ClusterPublishers interface {
	ForCluster(c ClusterRef, issuerURL string) ([]issuer.Publisher, error)
	Removed(c ClusterRef, issuerURL string)
}

// ClusterRef names a cluster.
type ClusterRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"cluster"`
}

func (c ClusterRef) String() string { return c.Namespace + "/" + c.Name }

// Config configures a Fleet.
type Config struct {
	// Secrets lists and watches the signing-key Secrets (get, list, watch on secrets).
	Secrets corev1client.SecretsGetter
	// Events, if set, receives a Warning Event on each refused Secret.
	Events corev1client.EventsGetter
	// Namespaces to watch; empty watches all.
	Namespaces []string
	// Template maps each cluster to its issuer URL.
	Template URLTemplate
	// Documents is every cluster's rendering configuration; IssuerURL and JWKSURI must be empty
	// (each cluster's come from the template).
	Documents documents.Config
	// Retention is how long a cluster whose Secret was deleted stays published: its tokens'
	// lifetime + clock skew + the documents' max-age.
	Retention time.Duration
	// MaxClusters bounds the clusters served; more are refused. 0 means DefaultMaxClusters.
	MaxClusters int
	Routes      Routes
	// Publishers, if set, adds publishers per cluster (mirrors).
	Publishers ClusterPublishers
	// Lifecycle, if set, gives every cluster a key lifecycle (stage, promote, retire through the
	// admin API) kept in its state Secret `<cluster>-oidc-keys`.
	Lifecycle *LifecycleConfig
	Logger    *slog.Logger
	Now       func() time.Time
}

// Fleet is the running set of cluster issuers.
type Fleet struct {
	cfg    Config
	logger *slog.Logger
	queue  workqueue.TypedRateLimitingInterface[string]

	mu       sync.Mutex
	stores   map[string]cache.Store // by watched namespace ("" = all)
	clusters map[string]*cluster    // by Secret key namespace/name
	byURL    map[string]*cluster
	refused  map[string]Refusal // by Secret key
	refusedN map[string]uint64  // refusals so far, by reason
	events   chan eventRequest
	// lifecycleQueue is RunLifecycle's queue while it runs (on the leader), else nil.
	lifecycleQueue workqueue.TypedRateLimitingInterface[string]
	synced         bool
	readyAt        time.Time
	startedAt      time.Time
}

// cluster is one served cluster.
type cluster struct {
	ref       ClusterRef
	secretKey string
	source    string // the fed source's name
	url       string
	created   time.Time // the Secret's creation, for URL conflicts
	issuer    *issuer.Issuer
	route     *server.Issuer
	deletedAt time.Time // zero while the Secret exists
	// manager and stateSource: the cluster's key lifecycle (Config.Lifecycle), else nil and "".
	manager     *lifecycle.Manager
	stateSource string
}

// Refusal is a Secret the fleet does not serve, and why.
type Refusal struct {
	Cluster ClusterRef `json:"cluster"`
	Secret  string     `json:"secret"`
	Reason  string     `json:"reason"`
	Detail  string     `json:"detail"`
	since   time.Time
}

// Refusal reasons (metric label values).
const (
	reasonBadName  = "bad_name"
	reasonBadURL   = "bad_url"
	reasonConflict = "url_conflict"
	reasonFull     = "fleet_full"
	reasonInternal = "internal"
)

// New validates cfg.
func New(cfg Config) (*Fleet, error) {
	switch {
	case cfg.Secrets == nil || cfg.Routes == nil:
		return nil, errors.New("fleet: Secrets and Routes are required")
	case cfg.Template.raw == "":
		return nil, errors.New("fleet: no issuer URL template")
	case cfg.Documents.IssuerURL != "" || cfg.Documents.JWKSURI != "":
		return nil, errors.New("fleet: each cluster's issuer URL and JWKS URI come from the template")
	case cfg.Retention <= 0:
		return nil, errors.New("fleet: the retention of deleted clusters must be positive")
	case cfg.MaxClusters < 0:
		return nil, errors.New("fleet: MaxClusters must not be negative")
	}
	if cfg.MaxClusters == 0 {
		cfg.MaxClusters = DefaultMaxClusters
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Namespaces) == 0 {
		cfg.Namespaces = []string{metav1.NamespaceAll}
	}
	return &Fleet{
		cfg:      cfg,
		logger:   cfg.Logger.With("component", "fleet"),
		stores:   map[string]cache.Store{},
		clusters: map[string]*cluster{},
		byURL:    map[string]*cluster{},
		refused:  map[string]Refusal{},
		refusedN: map[string]uint64{},
		events:   make(chan eventRequest, eventQueueSize),
	}, nil
}

// fleetSecret is what the informer caches of a Secret: who it is and, for a signing-key Secret,
// its public keys or why it has none. Private keys and every other Secret's data are dropped as
// the object arrives.
type fleetSecret struct {
	metav1.TypeMeta
	metav1.ObjectMeta
	cluster    string
	signingKey bool
	// state: the cluster's lifecycle state Secret (`<cluster>-oidc-keys`, created by the fleet).
	state bool
	keys  []keys.Key
	err   error
}

func (s *fleetSecret) DeepCopyObject() runtime.Object {
	out := *s
	s.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	return &out
}

// transform is the informer's transform: idempotent, as client-go requires.
func transform(obj any) (any, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil
	}
	clusterName := s.Labels[ClusterNameLabel]
	fs := &fleetSecret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: s.Namespace, Name: s.Name, UID: s.UID, ResourceVersion: s.ResourceVersion,
			CreationTimestamp: s.CreationTimestamp,
		},
		cluster:    clusterName,
		signingKey: clusterName != "" && s.Name == clusterName+SigningKeySuffix,
	}
	fs.state = clusterName != "" && s.Name == clusterName+StateSuffix && s.Labels[lifecycleManagedByLabel] == lifecycleManagedBy
	switch {
	case fs.signingKey:
		fs.keys, fs.err = kubesource.KeysFromSecret(s)
	case fs.state:
		// Only the keys to publish: a staged key's private half never enters the cache.
		fs.keys, fs.err = lifecycle.PublishedKeys(s)
	}
	return fs, nil
}

// Run watches the Secrets and serves the clusters until ctx ends.
func (f *Fleet) Run(ctx context.Context) error {
	f.mu.Lock()
	f.startedAt = f.cfg.Now()
	f.mu.Unlock()
	f.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 30*time.Second),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "fleet"})
	defer f.queue.ShutDown()
	ctx = logr.NewContext(ctx, logr.FromSlogHandler(f.logger.Handler()))

	var (
		wg     sync.WaitGroup
		synced []cache.InformerSynced
	)
	defer wg.Wait()
	for _, ns := range f.cfg.Namespaces {
		inf, err := f.informer(ns)
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.stores[ns] = inf.GetStore()
		f.mu.Unlock()
		synced = append(synced, inf.HasSynced)
		wg.Go(func() { inf.RunWithContext(ctx) })
	}
	wg.Go(func() {
		<-ctx.Done()
		f.queue.ShutDown()
	})
	wg.Go(func() { f.writeEvents(ctx) })
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil // ctx ended
	}
	f.mu.Lock()
	f.synced = true
	f.mu.Unlock()
	f.logger.Info("fleet Secrets listed", "namespaces", f.cfg.Namespaces, "pending", f.queue.Len())
	f.markReadyIfDrained()
	for f.processNext(ctx) {
	}
	return nil
}

func (f *Fleet) informer(namespace string) (cache.SharedIndexInformer, error) {
	secrets := f.cfg.Secrets.Secrets(namespace)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.LabelSelector = ClusterNameLabel
			return secrets.List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.LabelSelector = ClusterNameLabel
			return secrets.Watch(ctx, opts)
		},
	}
	desc := "fleet Secrets in all namespaces"
	if namespace != "" {
		desc = "fleet Secrets in namespace " + namespace
	}
	inf := cache.NewSharedIndexInformerWithOptions(lw, &corev1.Secret{}, cache.SharedIndexInformerOptions{ObjectDescription: desc})
	if err := inf.SetTransform(transform); err != nil {
		return nil, fmt.Errorf("setting the fleet informer transform: %w", err)
	}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			f.queue.Add(key)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		return nil, fmt.Errorf("adding the fleet informer event handler: %w", err)
	}
	return inf, nil
}

func (f *Fleet) processNext(ctx context.Context) bool {
	key, quit := f.queue.Get()
	if quit {
		return false
	}
	defer f.queue.Done(key)
	if err := f.sync(ctx, key); err != nil {
		f.logger.Warn("fleet: syncing a Secret failed; retrying", "secret", key, "error", err)
		f.queue.AddRateLimited(key)
		return true
	}
	f.queue.Forget(key)
	f.markReadyIfDrained()
	return true
}

// markReadyIfDrained makes the fleet ready once the Secrets were listed and every listed one was
// processed (at once when the list was empty: a management cluster without clusters yet is
// ready).
func (f *Fleet) markReadyIfDrained() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readyAt.IsZero() && f.synced && f.queue.Len() == 0 {
		f.readyAt = f.cfg.Now()
		f.logger.Info("fleet ready: every listed cluster processed", "clusters", len(f.clusters), "refused", len(f.refused),
			"took", f.readyAt.Sub(f.startedAt).Round(time.Millisecond))
	}
}

// lookup finds the cached form of the Secret key in whichever watched namespace holds it.
func (f *Fleet) lookup(key string) (*fleetSecret, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lookupLocked(key)
}

// lookupLocked is lookup with f.mu held (the informer stores have locks of their own).
func (f *Fleet) lookupLocked(key string) (*fleetSecret, bool, error) {
	ns, _, _ := strings.Cut(key, "/")
	store, ok := f.stores[ns]
	if !ok {
		store = f.stores[metav1.NamespaceAll]
	}
	if store == nil {
		return nil, false, fmt.Errorf("no watch covers %s", key)
	}
	obj, exists, err := store.GetByKey(key)
	if err != nil || !exists {
		return nil, false, err
	}
	fs, ok := obj.(*fleetSecret)
	if !ok {
		return nil, false, fmt.Errorf("unexpected %T in the fleet informer cache", obj)
	}
	return fs, true, nil
}

// sync brings one Secret's cluster up to date.
func (f *Fleet) sync(ctx context.Context, key string) error {
	fs, exists, err := f.lookup(key)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cfg.Lifecycle != nil && (exists && fs.state || !exists && strings.HasSuffix(key, StateSuffix)) {
		f.stateChangedLocked(key)
		return nil
	}
	now := f.cfg.Now()
	c := f.clusters[key]
	if !exists || !fs.signingKey {
		delete(f.refused, key)
		if c == nil {
			return nil
		}
		if c.deletedAt.IsZero() {
			c.deletedAt = now
			c.issuer.Observe(c.source, keys.Observation{Err: fmt.Errorf("secret %s was deleted; its last keys stay published for %s", key, f.cfg.Retention)})
			f.logger.Info("cluster's signing-key Secret deleted; keeping its last keys published for the retention",
				"cluster", c.ref.String(), "issuer", c.url, "retention", f.cfg.Retention, "until", now.Add(f.cfg.Retention).UTC())
		}
		if wait := c.deletedAt.Add(f.cfg.Retention).Sub(now); wait > 0 {
			f.queue.AddAfter(key, wait)
			return nil
		}
		f.removeLocked(c, "retention over after the Secret's deletion")
		return nil
	}
	if c != nil && c.ref.Name != fs.cluster {
		// Relabelled to another cluster: the old cluster's issuer must not serve the new keys.
		f.removeLocked(c, "its Secret now names another cluster")
		c = nil
	}
	if c == nil {
		if c = f.admitLocked(key, fs); c == nil {
			return nil
		}
	}
	if !c.deletedAt.IsZero() {
		f.logger.Info("cluster's signing-key Secret is back", "cluster", c.ref.String(), "deletedFor", now.Sub(c.deletedAt).Round(time.Second))
		c.deletedAt = time.Time{}
	}
	c.issuer.Observe(c.source, keys.Observation{Keys: fs.keys, Err: fs.err})
	f.kickLifecycleLocked(c)
	return nil
}

// admitLocked creates the cluster of a new signing-key Secret, or records why it is refused.
func (f *Fleet) admitLocked(key string, fs *fleetSecret) *cluster {
	ref := ClusterRef{Namespace: fs.Namespace, Name: fs.cluster}
	url, err := f.cfg.Template.Expand(fs.Namespace, fs.cluster)
	switch {
	case errors.Is(err, errBadName):
		f.refuseLocked(key, ref, reasonBadName, err.Error())
		return nil
	case err != nil:
		f.refuseLocked(key, ref, reasonBadURL, err.Error())
		return nil
	}
	created := fs.CreationTimestamp.Time
	if owner := f.byURL[url]; owner != nil {
		// The older Secret keeps the URL, whatever order they were listed in, so a restart never
		// hands a served issuer to another cluster; the newer one is refused.
		if !olderThan(created, key, owner.created, owner.secretKey) {
			f.refuseLocked(key, ref, reasonConflict, fmt.Sprintf("the issuer URL template %s maps it to %s, already served for cluster %s (older Secret %s); give the template %s or rename one cluster",
				f.cfg.Template, url, owner.ref, owner.secretKey, NamespacePlaceholder))
			return nil
		}
		f.removeLocked(owner, "an older Secret maps to the same issuer URL")
		f.refuseLocked(owner.secretKey, owner.ref, reasonConflict, fmt.Sprintf("the issuer URL template %s maps it to %s, which belongs to cluster %s (older Secret %s)",
			f.cfg.Template, url, ref, key))
	}
	if len(f.clusters) >= f.cfg.MaxClusters {
		f.refuseLocked(key, ref, reasonFull, fmt.Sprintf("the fleet already serves %d clusters (--fleet-max-clusters)", f.cfg.MaxClusters))
		return nil
	}
	c := &cluster{ref: ref, secretKey: key, source: "secret/" + key, url: url, created: created}
	if err := f.startLocked(c); err != nil {
		f.refuseLocked(key, ref, reasonInternal, err.Error())
		return nil
	}
	if _, was := f.refused[key]; was {
		delete(f.refused, key)
		f.logger.Info("cluster no longer refused", "cluster", ref.String(), "secret", key)
	}
	f.clusters[key] = c
	f.byURL[url] = c
	f.logger.Info("serving cluster", "cluster", ref.String(), "issuer", url, "secret", key)
	return c
}

func olderThan(a time.Time, aKey string, b time.Time, bKey string) bool {
	if !a.Equal(b) {
		return a.Before(b)
	}
	return aKey < bKey
}

// startLocked builds the cluster's pipeline and routes.
func (f *Fleet) startLocked(c *cluster) error {
	route, err := f.cfg.Routes.AddIssuer(c.url)
	if err != nil {
		return err
	}
	publishers := []issuer.Publisher{route}
	if f.cfg.Publishers != nil {
		more, err := f.cfg.Publishers.ForCluster(c.ref, c.url)
		if err != nil {
			f.cfg.Routes.RemoveIssuer(route)
			return err
		}
		publishers = append(publishers, more...)
	}
	docs := f.cfg.Documents
	docs.IssuerURL = c.url
	logger := f.logger.With("cluster", c.ref.String())
	sources := []string{c.source}
	if f.cfg.Lifecycle != nil {
		// The lifecycle names its own component.
		if c.manager, err = f.newManager(c, f.cfg.Logger.With("cluster", c.ref.String())); err != nil {
			f.cfg.Routes.RemoveIssuer(route)
			return err
		}
		c.stateSource = "lifecycle/" + c.stateKey()
		sources = append(sources, c.stateSource)
	}
	iss, err := issuer.New(issuer.Config{
		Documents: docs, FedSources: sources, Publishers: publishers, Logger: logger, Now: f.cfg.Now,
	})
	if err != nil {
		f.cfg.Routes.RemoveIssuer(route)
		return err
	}
	c.issuer, c.route = iss, route
	if f.cfg.Lifecycle != nil {
		f.observeStateLocked(c)
	}
	return nil
}

// removeLocked stops serving c: its paths answer 404 from now on.
func (f *Fleet) removeLocked(c *cluster, why string) {
	f.cfg.Routes.RemoveIssuer(c.route)
	delete(f.clusters, c.secretKey)
	if f.byURL[c.url] == c {
		delete(f.byURL, c.url)
	}
	if f.cfg.Publishers != nil {
		f.cfg.Publishers.Removed(c.ref, c.url)
	}
	f.logger.Info("cluster no longer served", "cluster", c.ref.String(), "issuer", c.url, "why", why)
	// A Secret refused because c held its URL may take it now.
	for key, r := range f.refused {
		if r.Reason == reasonConflict || r.Reason == reasonFull {
			f.queue.Add(key)
		}
	}
}

// refuseLocked records, logs and reports (Event) why a Secret is not served. A refusal already
// recorded with the same detail is not repeated.
func (f *Fleet) refuseLocked(key string, ref ClusterRef, reason, detail string) {
	if prev, ok := f.refused[key]; ok && prev.Reason == reason && prev.Detail == detail {
		return
	}
	f.refused[key] = Refusal{Cluster: ref, Secret: key, Reason: reason, Detail: detail, since: f.cfg.Now()}
	f.refusedN[reason]++
	f.logger.Error("refusing to serve a cluster", "cluster", ref.String(), "secret", key, "reason", reason, "detail", detail)
	if f.cfg.Events != nil {
		ns, name, _ := strings.Cut(key, "/")
		select {
		case f.events <- eventRequest{ns: ns, name: name, reason: "FleetClusterRefused", msg: detail}:
		default:
			// A burst of refusals (thousands of bad Secrets) must not pile up API calls: the log
			// line above and the metric already say it.
			f.logger.Debug("Event queue full; not recording an Event for a refused Secret", "secret", key)
		}
	}
}

// eventRequest is an Event waiting to be recorded by the fleet's Event writer.
type eventRequest struct{ ns, name, reason, msg string }

// eventQueueSize bounds the Events waiting to be written.
const eventQueueSize = 64

// writeEvents records queued Events one at a time until ctx ends.
func (f *Fleet) writeEvents(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-f.events:
			f.event(ctx, e.ns, e.name, e.reason, e.msg)
		}
	}
}

// event records a Warning Event on a Secret; failing to is logged, never fatal.
func (f *Fleet) event(ctx context.Context, ns, name, reason, msg string) {
	if f.cfg.Events == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := kubeevent.WarnOnSecret(ctx, f.cfg.Events, ns, name, reason, msg, f.cfg.Now()); err != nil {
		f.logger.Warn("could not record an Event on a cluster's Secret", "secret", ns+"/"+name, "reason", reason, "error", err)
	}
}

// ClusterStatus is one cluster as /readyz and the metrics show it.
type ClusterStatus struct {
	ClusterRef
	Issuer string `json:"issuer"`
	// Ready: its documents are published. Healthy: its Secret's latest content was good.
	Ready     bool       `json:"ready"`
	Healthy   bool       `json:"healthy"`
	Keys      int        `json:"keys"`
	LastError string     `json:"lastError,omitempty"`
	DeletedAt *time.Time `json:"deletedAt,omitempty"`
}

// Status is the fleet as a whole.
type Status struct {
	// Ready: the Secrets were listed and every listed one processed. One cluster's trouble never
	// makes the fleet unready: the others are served correctly.
	Ready    bool              `json:"ready"`
	Clusters int               `json:"clusters"`
	Serving  int               `json:"serving"`
	Waiting  int               `json:"waiting"`
	Failing  int               `json:"failing"`
	Retained int               `json:"retained"`
	Refused  int               `json:"refused"`
	Problems []ClusterStatus   `json:"problems,omitempty"`
	Refusals []Refusal         `json:"refusals,omitempty"`
	Reasons  map[string]uint64 `json:"refusalsTotal,omitempty"`
}

// maxListed bounds the clusters /readyz lists by name.
const maxListed = 20

// Clusters returns every served cluster's status, sorted.
func (f *Fleet) Clusters() []ClusterStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.clustersLocked()
}

func (f *Fleet) clustersLocked() []ClusterStatus {
	out := make([]ClusterStatus, 0, len(f.clusters))
	for _, c := range f.clusters {
		st := ClusterStatus{ClusterRef: c.ref, Issuer: c.url}
		// Its sources: the signing-key Secret, and the state Secret when it has a key lifecycle.
		st.Ready, st.Healthy = true, true
		for _, s := range c.issuer.Status() {
			st.Ready = st.Ready && s.Ready
			st.Healthy = st.Healthy && s.Healthy
			if st.LastError == "" {
				st.LastError = s.LastError
			}
		}
		if cur := c.issuer.Current(); cur != nil {
			st.Keys = cur.Keys.Len()
		}
		if !c.deletedAt.IsZero() {
			d := c.deletedAt.UTC()
			st.DeletedAt = &d
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b ClusterStatus) int { return strings.Compare(a.ClusterRef.String(), b.ClusterRef.String()) })
	return out
}

// Status summarises the fleet.
func (f *Fleet) Status() Status {
	f.mu.Lock()
	clusters := f.clustersLocked()
	st := Status{Ready: !f.readyAt.IsZero(), Clusters: len(clusters), Refused: len(f.refused), Reasons: copyCounts(f.refusedN)}
	for _, r := range f.refused {
		if len(st.Refusals) < maxListed {
			st.Refusals = append(st.Refusals, r)
		}
	}
	f.mu.Unlock()
	slices.SortFunc(st.Refusals, func(a, b Refusal) int { return strings.Compare(a.Secret, b.Secret) })
	for _, c := range clusters {
		problem := true
		switch {
		case c.DeletedAt != nil:
			st.Retained++
		case !c.Ready:
			st.Waiting++
		case !c.Healthy:
			st.Failing++
		default:
			st.Serving++
			problem = false
		}
		if problem && len(st.Problems) < maxListed {
			st.Problems = append(st.Problems, c)
		}
	}
	return st
}

func copyCounts(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Readiness is the fleet's /readyz check.
func (f *Fleet) Readiness() server.ReadinessCheck {
	return server.ReadinessCheck{Name: "fleet", Check: func() (bool, any) {
		st := f.Status()
		return st.Ready, st
	}}
}
