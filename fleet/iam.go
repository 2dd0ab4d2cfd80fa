package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/oidcprovider"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/thumbprint"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/issuer"
)

// Tags the fleet sets on an IAM OpenID Connect provider when it creates one, and only then: a
// provider found in place never gets them, so only providers the fleet created carry them. The
// managed-by pair is the one the issuer puts on what else it creates (kmskey.ManagedByTag, the
// lifecycle Secrets' label).
const (
	IAMManagedByTag   = "app.kubernetes.io/managed-by"
	IAMManagedByValue = "kube-oidc-issuer"
	// IAMClusterTag names the cluster (namespace/name) the provider was created for.
	IAMClusterTag = "kube-oidc-issuer/fleet-cluster"
)

// IAMAPI is the part of the AWS IAM client the fleet's registrations call: what single-cluster
// registration calls (oidcprovider.API) and, for IAMConfig.DeleteRemoved, deleting a provider.
// *iam.Client of aws-sdk-go-v2 implements it.
type IAMAPI interface {
	oidcprovider.API
	DeleteOpenIDConnectProvider(context.Context, *awsiam.DeleteOpenIDConnectProviderInput, ...func(*awsiam.Options)) (*awsiam.DeleteOpenIDConnectProviderOutput, error)
}

// IAMConfig configures IAMProviders.
type IAMConfig struct {
	API IAMAPI
	// Template is the fleet's: each cluster's provider URL is its issuer URL, and the template's
	// host, shared by every cluster, is where the thumbprint is fetched.
	Template URLTemplate
	// Audiences (client IDs), Tags, pinned Thumbprints and PruneThumbprints are what
	// single-cluster registration takes (oidcprovider.Desired), the same for every cluster. Tags
	// must not use IAMManagedByTag or IAMClusterTag.
	Audiences        []string
	Tags             map[string]string
	Thumbprints      []string // pinned; empty means fetch from the template's host
	PruneThumbprints bool
	// Fetcher computes the host's thumbprint; nil means the zero Fetcher (proxy from the
	// environment, system roots).
	Fetcher *thumbprint.Fetcher
	// Interval is how often every cluster's provider is reconciled, and how long a fetched
	// thumbprint is used.
	Interval time.Duration
	// RetryMin is the first retry delay of a failed cluster (doubling up to Interval), and how long
	// a failed thumbprint fetch is reported before the host is dialled again; zero means 15s.
	RetryMin time.Duration
	// Workers reconcile concurrently; 0 means 2.
	Workers int
	// DeleteRemoved deletes the provider of a cluster removed from the fleet, if the fleet created
	// it for that cluster (IAMManagedByTag and IAMClusterTag). Off, a removed cluster's provider is
	// left in place.
	DeleteRemoved bool
	Logger        *slog.Logger
}

// IAMProviders registers every cluster's issuer with AWS IAM as an OpenID Connect provider and keeps
// the registrations up to date, with a fixed set of workers sharing one queue: a cluster costs an
// entry in a map, not a goroutine. A cluster is reconciled on its first published documents, then
// every Interval, and after a failure with backoff; one cluster's failure holds up no other. The
// thumbprint of the template's host is fetched once per Interval and shared by every cluster. Only
// Run calls AWS: run it on the leader.
type IAMProviders struct {
	cfg        IAMConfig
	logger     *slog.Logger
	reconciler *oidcprovider.Reconciler
	host       string // thumbprint target: https://HOST of the template

	fetchMu sync.Mutex // held while fetching: one fetch at a time, the others reuse its result

	mu         sync.Mutex
	queue      workqueue.TypedRateLimitingInterface[string] // nil while not running
	byURL      map[string]*iamCluster
	failed     map[string]string // issuer URL → last error, while failing
	tp         iamThumbprint
	reconciles uint64
	errorsN    uint64
	deleted    uint64
}

type iamCluster struct {
	cluster    ClusterRef
	url        string
	published  bool // documents published: registered from then on
	removed    bool
	registered bool // reconciled successfully since start
	arn        string
	foreign    bool // found in place, not created by the fleet for this cluster
}

type iamThumbprint struct {
	thumbprints []string
	err         error
	at          time.Time
	stale       bool // the interval passed: fetch again
	fetches     uint64
}

// thumbprintError is a failed fetch of the shared thumbprint: logged once per fetch, not once per
// cluster.
type thumbprintError struct{ err error }

func (e *thumbprintError) Error() string { return e.err.Error() }
func (e *thumbprintError) Unwrap() error { return e.err }

// NewIAMProviders validates cfg: what would make every cluster's registration fail is refused here.
func NewIAMProviders(cfg IAMConfig) (*IAMProviders, error) {
	if cfg.API == nil || cfg.Interval <= 0 {
		return nil, errors.New("fleet IAM: API and a positive Interval are required")
	}
	if cfg.Template.raw == "" {
		return nil, errors.New("fleet IAM: no issuer URL template")
	}
	sample, err := cfg.Template.Expand("ns", "cluster")
	if err != nil {
		return nil, err
	}
	if err := iam.ValidateProviderURL(sample); err != nil {
		return nil, fmt.Errorf("fleet IAM: the issuer URL template %s renders URLs AWS IAM refuses as provider URLs: %w", cfg.Template, err)
	}
	if err := iam.ValidateAudiences(cfg.Audiences); err != nil {
		return nil, fmt.Errorf("fleet IAM: %w", err)
	}
	for _, t := range cfg.Thumbprints {
		if _, err := iam.NormalizeThumbprint(t); err != nil {
			return nil, fmt.Errorf("fleet IAM: %w", err)
		}
	}
	for k := range cfg.Tags {
		if ReservedIAMTag(k) {
			return nil, fmt.Errorf("fleet IAM: tag %q is the fleet's own: it marks the providers the fleet created", k)
		}
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 15 * time.Second
	}
	cfg.RetryMin = min(cfg.RetryMin, cfg.Interval)
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.Fetcher == nil {
		cfg.Fetcher = &thumbprint.Fetcher{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	u, err := url.Parse(sample)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger.With("component", "fleet-iam")
	return &IAMProviders{
		cfg: cfg, logger: logger, reconciler: oidcprovider.New(cfg.API, logger), host: "https://" + u.Host,
		byURL: map[string]*iamCluster{}, failed: map[string]string{},
	}, nil
}

// ReservedIAMTag reports whether key is one of the tags the fleet sets on the providers it creates
// (IAM compares tag keys ignoring case).
func ReservedIAMTag(key string) bool {
	return strings.EqualFold(key, IAMManagedByTag) || strings.EqualFold(key, IAMClusterTag)
}

// ForCluster implements ClusterPublishers. It never fails.
func (p *IAMProviders) ForCluster(c ClusterRef, issuerURL string) ([]issuer.Publisher, error) {
	e := &iamCluster{cluster: c, url: issuerURL}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.byURL[issuerURL] = e // a removal still pending for the URL is superseded: the URL is in use
	delete(p.failed, issuerURL)
	return []issuer.Publisher{iamPublisher{p: p, e: e}}, nil
}

// Removed implements ClusterPublishers: with DeleteRemoved the cluster's provider is deleted if the
// fleet created it for this cluster; otherwise it is left in place and no longer reconciled.
func (p *IAMProviders) Removed(c ClusterRef, issuerURL string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.byURL[issuerURL]
	if e == nil || e.cluster != c {
		return
	}
	if !p.cfg.DeleteRemoved {
		delete(p.byURL, issuerURL)
		delete(p.failed, issuerURL)
		return
	}
	e.removed = true
	p.addLocked(issuerURL)
}

type iamPublisher struct {
	p *IAMProviders
	e *iamCluster
}

// Publish queues the cluster's first reconcile; later document sets (key rotations) change nothing
// IAM holds.
func (i iamPublisher) Publish(*documents.Set) {
	i.p.mu.Lock()
	defer i.p.mu.Unlock()
	if i.p.byURL[i.e.url] == i.e && !i.e.removed && !i.e.published {
		i.e.published = true
		i.p.addLocked(i.e.url)
	}
}

func (p *IAMProviders) addLocked(url string) {
	if p.queue != nil {
		p.queue.Add(url)
	}
}

// Run reconciles until ctx ends. It may be run again after it returned (leadership regained).
func (p *IAMProviders) Run(ctx context.Context) error {
	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](p.cfg.RetryMin, p.cfg.Interval),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "fleet-iam"})
	p.mu.Lock()
	p.queue = q
	p.tp.stale = true // a new leader fetches the thumbprint again
	for u, e := range p.byURL {
		if e.published || e.removed {
			q.Add(u)
		}
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.queue = nil
		p.mu.Unlock()
	}()
	runWorkers(ctx, q, p.cfg.Workers, p.cfg.Interval, p.processNext, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.tp.stale = true
		for u, e := range p.byURL {
			if e.published && !e.removed {
				q.Add(u)
			}
		}
	})
	return nil
}

func (p *IAMProviders) processNext(ctx context.Context, q queue) bool {
	u, quit := q.Get()
	if quit {
		return false
	}
	defer q.Done(u)
	attempted, err := p.sync(ctx, u)
	if err != nil && ctx.Err() != nil {
		return true // shutting down: not a failure of the cluster's
	}
	p.mu.Lock()
	if attempted {
		p.reconciles++
	}
	if err != nil {
		p.errorsN++
		first := p.failed[u] == ""
		p.failed[u] = err.Error()
		p.mu.Unlock()
		var tpErr *thumbprintError
		if first && !errors.As(err, &tpErr) { // the fetch failure is logged once, not per cluster
			p.logger.Warn("registering a cluster's issuer with AWS IAM failed; retrying with backoff", "issuer", u, "error", err)
		}
		q.AddRateLimited(u)
		return true
	}
	msg, was := p.failed[u]
	delete(p.failed, u)
	p.mu.Unlock()
	q.Forget(u)
	if was {
		p.logger.Info("registering a cluster's issuer with AWS IAM recovered", "issuer", u, "lastError", msg)
	}
	return true
}

// sync reconciles the provider of url, or deletes it for a removed cluster. attempted is false when
// there was nothing to do.
func (p *IAMProviders) sync(ctx context.Context, url string) (attempted bool, err error) {
	p.mu.Lock()
	e := p.byURL[url]
	if e == nil {
		p.mu.Unlock()
		return false, nil
	}
	ref, published, removed := e.cluster, e.published, e.removed
	p.mu.Unlock()

	if removed {
		if err := p.deleteIfCreated(ctx, url, ref); err != nil {
			return true, err
		}
		p.mu.Lock()
		if p.byURL[url] == e {
			delete(p.byURL, url)
		}
		p.mu.Unlock()
		return true, nil
	}
	if !published {
		return false, nil
	}
	tps, err := p.thumbprints(ctx)
	if err != nil {
		return true, err
	}
	plan, err := p.reconciler.Reconcile(ctx, oidcprovider.Desired{
		URL: url, Audiences: p.cfg.Audiences, Thumbprints: tps, PruneThumbprints: p.cfg.PruneThumbprints,
		Tags: p.cfg.Tags, CreateTags: map[string]string{IAMManagedByTag: IAMManagedByValue, IAMClusterTag: ref.String()},
	})
	if err != nil {
		return true, err
	}
	foreign := !plan.Create && !createdFor(plan.Current.Tags, ref)
	p.mu.Lock()
	wasForeign := e.foreign
	if p.byURL[url] == e {
		e.registered, e.arn, e.foreign = true, plan.ARN, foreign
	}
	p.mu.Unlock()
	if drift := plan.Drift(); len(drift) > 0 {
		p.logger.Info("reconciled a cluster's IAM OIDC provider", "issuer", url, "cluster", ref.String(), "arn", plan.ARN, "drift", drift)
	}
	if foreign && !wasForeign {
		p.logger.Info("a cluster's IAM OIDC provider was there already, not created by the fleet for this cluster: it is kept up to date but never deleted",
			"issuer", url, "cluster", ref.String(), "arn", plan.ARN)
	}
	return true, nil
}

// createdFor reports whether tags mark a provider the fleet created for c.
func createdFor(tags map[string]string, c ClusterRef) bool {
	managed, ok1 := lookupIAMTag(tags, IAMManagedByTag)
	cluster, ok2 := lookupIAMTag(tags, IAMClusterTag)
	return ok1 && ok2 && managed == IAMManagedByValue && cluster == c.String()
}

// lookupIAMTag finds key the way IAM matches tag keys: ignoring case.
func lookupIAMTag(tags map[string]string, key string) (string, bool) {
	for k, v := range tags {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return "", false
}

// deleteIfCreated deletes the provider of a removed cluster's URL if the fleet created it for that
// cluster; any other provider is left alone.
func (p *IAMProviders) deleteIfCreated(ctx context.Context, url string, c ClusterRef) error {
	cur, err := p.reconciler.Find(ctx, url)
	if err != nil {
		return err
	}
	if cur == nil {
		return nil
	}
	if !createdFor(cur.Tags, c) {
		p.logger.Info("not deleting the IAM OIDC provider of a removed cluster: the fleet did not create it for this cluster",
			"issuer", url, "cluster", c.String(), "arn", cur.ARN, "tags", cur.Tags)
		return nil
	}
	_, err = p.cfg.API.DeleteOpenIDConnectProvider(ctx, &awsiam.DeleteOpenIDConnectProviderInput{OpenIDConnectProviderArn: aws.String(cur.ARN)})
	var gone *types.NoSuchEntityException
	if err != nil && !errors.As(err, &gone) {
		return fmt.Errorf("deleting the IAM OIDC provider %s of removed cluster %s (iam:DeleteOpenIDConnectProvider): %w", cur.ARN, c, err)
	}
	p.mu.Lock()
	p.deleted++
	p.mu.Unlock()
	p.logger.Info("deleted the IAM OIDC provider of a removed cluster", "issuer", url, "cluster", c.String(), "arn", cur.ARN)
	return nil
}

// thumbprints are the pinned ones, or the template host's, fetched at most once per Interval (and
// after a failure at most once per RetryMin) whatever the number of clusters.
func (p *IAMProviders) thumbprints(ctx context.Context) ([]string, error) {
	if len(p.cfg.Thumbprints) > 0 {
		return p.cfg.Thumbprints, nil
	}
	p.fetchMu.Lock()
	defer p.fetchMu.Unlock()
	p.mu.Lock()
	c := p.tp
	p.mu.Unlock()
	age := time.Since(c.at)
	switch {
	case c.at.IsZero() || c.stale:
	case c.err == nil && age < p.cfg.Interval:
		return c.thumbprints, nil
	case c.err != nil && age < p.cfg.RetryMin:
		return nil, c.err
	}
	start := time.Now()
	res, err := p.cfg.Fetcher.Fetch(ctx, p.host)
	if err != nil && ctx.Err() != nil {
		return nil, err // shutting down: not the host's failure
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tp = iamThumbprint{at: start, fetches: c.fetches + 1}
	if err != nil {
		p.tp.err = &thumbprintError{fmt.Errorf("computing the thumbprint of %s, shared by every cluster (or pin it): %w", p.host, err)}
		p.logger.Error("fetching the thumbprint of the fleet's issuer host failed; no cluster's IAM OIDC provider is reconciled until it works", "host", p.host, "error", err, "retryIn", p.cfg.RetryMin)
		return nil, p.tp.err
	}
	p.tp.thumbprints = []string{res.Thumbprint}
	if c.err != nil || !slices.Equal(c.thumbprints, p.tp.thumbprints) {
		p.logger.Info("fetched the thumbprint of the fleet's issuer host", "host", res.Address, "proxy", res.Proxy, "thumbprint", res.Thumbprint,
			"subject", res.Certificate.Subject.String(), "chainLength", len(res.Chain))
	}
	if res.LeafOnly() {
		p.logger.Warn("the host presents only its own certificate, no CA: its thumbprint changes at every renewal", "host", res.Address, "thumbprint", res.Thumbprint)
	}
	return p.tp.thumbprints, nil
}

// IAMStatus is shown on /readyz.
type IAMStatus struct {
	// Clusters known, by state: Registered (reconciled since start, not failing), Pending (no
	// documents yet, or queued), Failing, Removing (removed, their provider's deletion pending).
	Clusters   int `json:"clusters"`
	Registered int `json:"registered"`
	Pending    int `json:"pending"`
	Failing    int `json:"failing"`
	Removing   int `json:"removing,omitempty"`
	// Foreign providers were found in place, not created by the fleet: never deleted.
	Foreign       int                 `json:"foreign,omitempty"`
	DeleteRemoved bool                `json:"deleteRemoved"`
	Thumbprint    IAMThumbprintStatus `json:"thumbprint"`
	Reconciles    uint64              `json:"reconciles"`
	ErrorsTotal   uint64              `json:"errorsTotal"`
	Deleted       uint64              `json:"deleted"`
	Errors        map[string]string   `json:"errors,omitempty"` // at most maxListed, by issuer URL
}

// IAMThumbprintStatus is the shared thumbprint.
type IAMThumbprintStatus struct {
	Host        string    `json:"host"`
	Pinned      bool      `json:"pinned,omitempty"`
	Thumbprints []string  `json:"thumbprints,omitempty"`
	FetchedAt   time.Time `json:"fetchedAt,omitzero"`
	LastError   string    `json:"lastError,omitempty"`
	Fetches     uint64    `json:"fetches"`
}

// Status summarises the registrations.
func (p *IAMProviders) Status() IAMStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := IAMStatus{
		Clusters: len(p.byURL), Failing: len(p.failed), DeleteRemoved: p.cfg.DeleteRemoved,
		Reconciles: p.reconciles, ErrorsTotal: p.errorsN, Deleted: p.deleted,
		Thumbprint: IAMThumbprintStatus{Host: p.host, Fetches: p.tp.fetches},
	}
	if len(p.cfg.Thumbprints) > 0 {
		st.Thumbprint.Pinned, st.Thumbprint.Thumbprints = true, slices.Clone(p.cfg.Thumbprints)
	} else {
		st.Thumbprint.Thumbprints, st.Thumbprint.FetchedAt = slices.Clone(p.tp.thumbprints), p.tp.at
		if p.tp.err != nil {
			st.Thumbprint.LastError = p.tp.err.Error()
		}
	}
	for u, e := range p.byURL {
		_, failing := p.failed[u]
		switch {
		case failing:
		case e.removed:
			st.Removing++
		case e.registered:
			st.Registered++
		default:
			st.Pending++
		}
		if e.foreign {
			st.Foreign++
		}
	}
	urls := make([]string, 0, len(p.failed))
	for u := range p.failed {
		urls = append(urls, u)
	}
	slices.Sort(urls)
	for _, u := range urls[:min(len(urls), maxListed)] {
		if st.Errors == nil {
			st.Errors = map[string]string{}
		}
		st.Errors[u] = p.failed[u]
	}
	return st
}

// Metrics exposes the registrations, computed at scrape time from Status (no series per cluster).
func (p *IAMProviders) Metrics() prometheus.Collector { return iamCollector{p} }

type iamCollector struct{ p *IAMProviders }

var (
	descIAMClusters = prometheus.NewDesc("kube_oidc_issuer_fleet_iam_clusters",
		"Clusters by the state of their IAM OIDC provider: registered (reconciled since start), pending (no documents yet, or queued), failing (see /readyz and the log), removing (removed, deletion of the provider pending).",
		[]string{"state"}, nil)
	descIAMReconciles = prometheus.NewDesc("kube_oidc_issuer_fleet_iam_reconciles_total",
		"Reconciles (or deletions) of clusters' IAM OIDC providers attempted.", nil, nil)
	descIAMErrors = prometheus.NewDesc("kube_oidc_issuer_fleet_iam_reconcile_errors_total",
		"Reconciles (or deletions) of clusters' IAM OIDC providers that failed (thumbprint fetch or IAM call).", nil, nil)
	descIAMDeleted = prometheus.NewDesc("kube_oidc_issuer_fleet_iam_providers_deleted_total",
		"IAM OIDC providers of removed clusters deleted (only with deletion enabled, only those the fleet created).", nil, nil)
)

func (c iamCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descIAMClusters, descIAMReconciles, descIAMErrors, descIAMDeleted} {
		ch <- d
	}
}

func (c iamCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.p.Status()
	for state, n := range map[string]int{"registered": st.Registered, "pending": st.Pending, "failing": st.Failing, "removing": st.Removing} {
		ch <- prometheus.MustNewConstMetric(descIAMClusters, prometheus.GaugeValue, float64(n), state)
	}
	ch <- prometheus.MustNewConstMetric(descIAMReconciles, prometheus.CounterValue, float64(st.Reconciles))
	ch <- prometheus.MustNewConstMetric(descIAMErrors, prometheus.CounterValue, float64(st.ErrorsTotal))
	ch <- prometheus.MustNewConstMetric(descIAMDeleted, prometheus.CounterValue, float64(st.Deleted))
}

// Combine is several ClusterPublishers as one (mirrors and IAM registration): a cluster gets the
// publishers of each, in order, and each is told of its removal. nil ones are skipped.
//
// When one fails in ForCluster, those before it keep an entry for the cluster that nothing publishes
// to; they are not told Removed, which would delete what an earlier run published for it.
func Combine(ps ...ClusterPublishers) ClusterPublishers {
	var set publisherSet
	for _, p := range ps {
		if p != nil {
			set = append(set, p)
		}
	}
	switch len(set) {
	case 0:
		return nil
	case 1:
		return set[0]
	}
	return set
}

type publisherSet []ClusterPublishers

func (s publisherSet) ForCluster(c ClusterRef, issuerURL string) ([]issuer.Publisher, error) {
	var out []issuer.Publisher
	for _, p := range s {
		more, err := p.ForCluster(c, issuerURL)
		if err != nil {
			return nil, err
		}
		out = append(out, more...)
	}
	return out, nil
}

func (s publisherSet) Removed(c ClusterRef, issuerURL string) {
	for _, p := range s {
		p.Removed(c, issuerURL)
	}
}
