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

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/signingprobe"
)

// KubeconfigSuffix ends the name of the Secret in which Cluster API keeps a workload cluster's
// admin kubeconfig (key "value").
const KubeconfigSuffix = "-kubeconfig"

// maxKubeconfigBytes bounds what is parsed of a kubeconfig Secret.
const maxKubeconfigBytes = 1 << 20

// ProbeConfig configures the fleet's signing probes.
type ProbeConfig struct {
	// Secrets reads each cluster's `<cluster>-kubeconfig` Secret, on demand (it is never cached).
	Secrets corev1client.SecretsGetter
	// ServiceAccount (NAMESPACE/NAME) in each workload cluster whose probe tokens are requested.
	ServiceAccount string
	Interval       time.Duration
	ProbesPerRound int
	Timeout        time.Duration
	// Workers probe concurrently; 0 means 4.
	Workers int
	Logger  *slog.Logger
	Now     func() time.Time
}

// Probes asks every workload cluster's control plane, through its admin kubeconfig, which key it
// signs with (TokenRequest for a probe token, of which only the header's kid is read), and reports
// a cluster whose control plane signs with a key its published JWKS lacks: every token it issues
// then fails verification (AWS STS: InvalidIdentityToken). That happens when a Secret and the
// control plane disagree, e.g. a restored `<cluster>-sa` or a control plane not rolled.
//
// A fixed set of workers serves every cluster in turn: a cluster costs an entry in a map. The
// kubeconfig is read when a probe runs and dropped after it; the client's connections are closed
// after each request (signingprobe.FreshConnections), so nothing per cluster stays open.
type Probes struct {
	cfg    ProbeConfig
	fleet  *Fleet
	logger *slog.Logger
	saNS   string
	saName string

	mu     sync.Mutex
	status map[string]*ProbeStatus // by cluster (namespace/name)
}

// ProbeStatus is one cluster's latest probe.
type ProbeStatus struct {
	At          time.Time `json:"at"`
	Result      string    `json:"result"`
	Signing     []string  `json:"signing,omitempty"`
	Unpublished []string  `json:"unpublished,omitempty"`
	LastError   string    `json:"lastError,omitempty"`
}

// NewProbes validates cfg; Run probes the clusters of f.
func NewProbes(f *Fleet, cfg ProbeConfig) (*Probes, error) {
	ns, name, ok := strings.Cut(cfg.ServiceAccount, "/")
	switch {
	case f == nil || cfg.Secrets == nil:
		return nil, errors.New("fleet probes: a fleet and a Secrets client are required")
	case !ok || ns == "" || name == "" || strings.Contains(name, "/"):
		return nil, fmt.Errorf("fleet probes: service account %q: want NAMESPACE/NAME", cfg.ServiceAccount)
	case cfg.Interval <= 0 || cfg.Timeout <= 0 || cfg.ProbesPerRound <= 0:
		return nil, errors.New("fleet probes: interval, timeout and probes per round must be positive")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Probes{cfg: cfg, fleet: f, logger: cfg.Logger.With("component", "fleet-signing-probe"), saNS: ns, saName: name, status: map[string]*ProbeStatus{}}, nil
}

// Run probes every served cluster once per interval until ctx ends. Run it on the leader.
func (p *Probes) Run(ctx context.Context) error {
	ticker := time.NewTicker(p.cfg.Interval)
	defer ticker.Stop()
	for {
		p.round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// round probes every served cluster once, with the configured number of workers.
func (p *Probes) round(ctx context.Context) {
	targets := p.fleet.probeTargets()
	jobs := make(chan probeTarget)
	var wg sync.WaitGroup
	for range p.cfg.Workers {
		wg.Go(func() {
			for t := range jobs {
				p.probe(ctx, t)
			}
		})
	}
	for _, t := range targets {
		select {
		case jobs <- t:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(jobs)
	wg.Wait()
	p.forgetGone(targets)
}

func (p *Probes) forgetGone(targets []probeTarget) {
	live := make(map[string]bool, len(targets))
	for _, t := range targets {
		live[t.ref.String()] = true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.status {
		if !live[k] {
			delete(p.status, k)
		}
	}
}

func (p *Probes) probe(ctx context.Context, t probeTarget) {
	st := &ProbeStatus{At: p.cfg.Now()}
	kids, err := p.signingKIDs(ctx, t)
	switch {
	case err != nil:
		st.Result, st.LastError = resultOf(err), err.Error()
	default:
		st.Result, st.Signing = signingprobe.ResultOK, kids
		for _, kid := range kids {
			if !slices.Contains(t.published, kid) {
				st.Unpublished = append(st.Unpublished, kid)
			}
		}
		if t.recorder != nil {
			// The cluster's key lifecycle never prunes a key seen signing (as in single-cluster
			// mode); it writes its state only when what signs changes, or every 10 minutes.
			obs := signingprobe.Observation{At: p.cfg.Now(), KIDs: kids,
				ValidFor: 2*p.cfg.Interval + time.Duration(p.cfg.ProbesPerRound)*p.cfg.Timeout}
			if err := t.recorder.RecordSigning(ctx, obs); err != nil {
				p.logger.Warn("recording what a workload cluster signs with failed; the next round retries", "cluster", t.ref.String(), "error", err)
			}
		}
	}
	p.mu.Lock()
	prev := p.status[t.ref.String()]
	p.status[t.ref.String()] = st
	p.mu.Unlock()

	was := prev != nil && len(prev.Unpublished) > 0
	switch {
	case len(st.Unpublished) > 0 && (!was || !slices.Equal(prev.Unpublished, st.Unpublished)):
		msg := fmt.Sprintf("the control plane of cluster %s signs with %s, which its published JWKS (%s) lacks: every token it issues fails verification; publish that key (fix %s) or roll the control plane to the published key",
			t.ref, strings.Join(st.Unpublished, ", "), t.url, t.secretKey)
		p.logger.Error("a workload cluster signs with an unpublished key", "cluster", t.ref.String(), "unpublished", st.Unpublished, "published", t.published)
		ns, name, _ := strings.Cut(t.secretKey, "/")
		p.fleet.event(ctx, ns, name, "SigningKeyUnpublished", msg)
	case len(st.Unpublished) == 0 && was && err == nil:
		p.logger.Info("a workload cluster signs with a published key again", "cluster", t.ref.String(), "signing", st.Signing)
	case err != nil && (prev == nil || prev.Result != st.Result):
		p.logger.Warn("probing a workload cluster's signing key failed", "cluster", t.ref.String(), "result", st.Result, "error", err)
	}
}

// signingKIDs reads the cluster's kubeconfig and runs one probe round against its API server.
func (p *Probes) signingKIDs(ctx context.Context, t probeTarget) ([]string, error) {
	ns, _, _ := strings.Cut(t.secretKey, "/")
	name := t.ref.Name + KubeconfigSuffix
	sec, err := p.cfg.Secrets.Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, &kubeconfigError{fmt.Errorf("reading Secret %s/%s: %w", ns, name, err)}
	}
	raw, err := kubeconfigOf(sec)
	if err != nil {
		return nil, &kubeconfigError{fmt.Errorf("secret %s/%s: %w", ns, name, err)}
	}
	rc, err := clientcmd.RESTConfigFromKubeConfig(raw)
	if err != nil {
		// clientcmd's errors quote no credentials, but keep the message short anyway.
		return nil, &kubeconfigError{fmt.Errorf("secret %s/%s: its kubeconfig does not load", ns, name)}
	}
	rc = signingprobe.FreshConnections(rc)
	rc.Timeout = p.cfg.Timeout
	rc.UserAgent = "kube-oidc-issuer-fleet-signing-probe"
	client, err := corev1client.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("client for cluster %s: %w", t.ref, err)
	}
	minter := signingprobe.TokenRequester{Client: client, Namespace: p.saNS, Name: p.saName}
	return signingprobe.Round(ctx, minter, p.cfg.ProbesPerRound, p.cfg.Timeout, nil)
}

func kubeconfigOf(sec *corev1.Secret) ([]byte, error) {
	raw, ok := sec.Data["value"]
	if !ok {
		return nil, errors.New(`no "value" entry (Cluster API keeps the kubeconfig there)`)
	}
	if len(raw) > maxKubeconfigBytes {
		return nil, fmt.Errorf("kubeconfig larger than %d bytes", maxKubeconfigBytes)
	}
	return raw, nil
}

// kubeconfigError marks a probe that failed before reaching the workload cluster.
type kubeconfigError struct{ err error }

func (e *kubeconfigError) Error() string { return e.err.Error() }
func (e *kubeconfigError) Unwrap() error { return e.err }

// resultOf labels a failed probe like the single-cluster probe does, plus "no_kubeconfig".
func resultOf(err error) string {
	var ke *kubeconfigError
	if errors.As(err, &ke) {
		return "no_kubeconfig"
	}
	return signingprobe.Classify(err)
}

// Status is every probed cluster's latest probe, by cluster (namespace/name).
func (p *Probes) Status() map[string]ProbeStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]ProbeStatus, len(p.status))
	for k, v := range p.status {
		out[k] = *v
	}
	return out
}

// ProbeSummary is the probes as /readyz shows them: counts and at most maxListed clusters with
// trouble.
type ProbeSummary struct {
	Probed      int                    `json:"probed"`
	OK          int                    `json:"ok"`
	Unpublished map[string][]string    `json:"unpublished,omitempty"`
	Failing     map[string]ProbeStatus `json:"failing,omitempty"`
}

// Summary summarises the probes.
func (p *Probes) Summary() ProbeSummary {
	st := p.Status()
	keys := make([]string, 0, len(st))
	for k := range st {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	s := ProbeSummary{Probed: len(st)}
	for _, k := range keys {
		v := st[k]
		switch {
		case len(v.Unpublished) > 0:
			if s.Unpublished == nil {
				s.Unpublished = map[string][]string{}
			}
			if len(s.Unpublished) < maxListed {
				s.Unpublished[k] = v.Unpublished
			}
		case v.Result != signingprobe.ResultOK:
			if s.Failing == nil {
				s.Failing = map[string]ProbeStatus{}
			}
			if len(s.Failing) < maxListed {
				s.Failing[k] = v
			}
		default:
			s.OK++
		}
	}
	return s
}

// probeTarget is what a probe needs of a served cluster.
type probeTarget struct {
	ref       ClusterRef
	secretKey string
	url       string
	published []string
	// recorder is the cluster's key lifecycle when it has a state Secret, else nil: recording
	// an observation would otherwise create a state for every cluster.
	recorder signingprobe.Recorder
}

// probeTargets lists the clusters with published documents and a Secret (not retained ones).
func (f *Fleet) probeTargets() []probeTarget {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]probeTarget, 0, len(f.clusters))
	for _, c := range f.clusters {
		cur := c.issuer.Current()
		if cur == nil || !c.deletedAt.IsZero() {
			continue
		}
		t := probeTarget{ref: c.ref, secretKey: c.secretKey, url: c.url, published: cur.Keys.KeyIDs()}
		if c.manager != nil {
			if fs, exists, _ := f.lookupLocked(c.stateKey()); exists && fs.state {
				t.recorder = c.manager
			}
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b probeTarget) int { return strings.Compare(a.ref.String(), b.ref.String()) })
	return out
}

var (
	descProbeResults = prometheus.NewDesc("kube_oidc_issuer_fleet_signing_probes",
		"Clusters by the result of their latest signing probe: ok, no_kubeconfig, forbidden, not_found, unreachable, bad_token, error.", []string{"result"}, nil)
	descUnpublished = prometheus.NewDesc("kube_oidc_issuer_fleet_cluster_signing_key_unpublished",
		"Keys a cluster's control plane signs with (seen by its latest probe) that its published JWKS lacks: its tokens fail verification. Alert on > 0.", []string{"namespace", "cluster"}, nil)
)

// Metrics exposes the probes, computed at scrape time.
func (p *Probes) Metrics() prometheus.Collector { return probeCollector{p} }

type probeCollector struct{ p *Probes }

func (c probeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descProbeResults
	ch <- descUnpublished
}

func (c probeCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{}
	for _, r := range []string{signingprobe.ResultOK, "no_kubeconfig", signingprobe.ResultForbidden, signingprobe.ResultNotFound,
		signingprobe.ResultUnreachable, signingprobe.ResultBadToken, signingprobe.ResultError} {
		counts[r] = 0
	}
	for k, st := range c.p.Status() {
		counts[st.Result]++
		ns, name, _ := strings.Cut(k, "/")
		ch <- prometheus.MustNewConstMetric(descUnpublished, prometheus.GaugeValue, float64(len(st.Unpublished)), ns, name)
	}
	for r, n := range counts {
		ch <- prometheus.MustNewConstMetric(descProbeResults, prometheus.GaugeValue, float64(n), r)
	}
}
