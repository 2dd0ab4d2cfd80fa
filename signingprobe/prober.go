// Package signingprobe finds out which key the control plane really signs service-account tokens
// with: it asks the TokenRequest API for a short-lived token of one ServiceAccount, with an
// audience nobody accepts, and reads the kid from the token's header. The token itself is never
// logged, stored or sent anywhere; it is dropped as soon as its header is read.
//
// The signing-key Secret says which key kube-apiserver will sign with after its next restart; the
// probe says which key it signs with now. The key lifecycle uses the observation so that a key
// that still signs is never pruned (see lifecycle.Manager.RecordSigning), and operators learn when
// the control plane still signs with an outgoing key, or with a key nobody publishes.
//
// Several kube-apiservers behind one load-balanced endpoint sign with different keys while the
// control plane rolls. Each round therefore makes several probes (--signing-probe-count, default
// 3), each on a new connection (FreshConnections), so that a connection-balancing load balancer
// spreads them; a kid seen by any probe of a round counts as signing. A round that misses one
// apiserver costs nothing: a key's retention runs from the last round that saw it, and the next
// round is another draw.
package signingprobe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of the probe's flags.
const (
	DefaultInterval       = time.Minute
	DefaultProbesPerRound = 3
	DefaultTimeout        = 10 * time.Second
)

// Observation is what one successful probe round saw.
type Observation struct {
	// At is when the round ended.
	At time.Time
	// KIDs are the kids the round's tokens were signed with: sorted, unique, at least one.
	KIDs []string
	// ValidFor is how long the observation may stand for "what the control plane signs with now":
	// past At+ValidFor without a newer round, the probe has stopped answering.
	ValidFor time.Duration
}

// Current reports whether the observation still stands at now.
func (o Observation) Current(now time.Time) bool {
	return !o.At.IsZero() && now.Before(o.At.Add(o.ValidFor))
}

// Minter mints one probe token; TokenRequester is the real one.
type Minter interface {
	Mint(ctx context.Context) (string, error)
}

// Recorder receives every successful round (lifecycle.Manager).
type Recorder interface {
	RecordSigning(ctx context.Context, obs Observation) error
}

// Config configures a Prober.
type Config struct {
	// Minter mints probe tokens. Required.
	Minter Minter
	// ServiceAccount is NAMESPACE/NAME of the probe's ServiceAccount, for status and logs.
	ServiceAccount string
	// Interval between rounds; default DefaultInterval.
	Interval time.Duration
	// ProbesPerRound is how many tokens each round asks for; default DefaultProbesPerRound.
	ProbesPerRound int
	// Timeout bounds each probe; default DefaultTimeout.
	Timeout time.Duration
	// Published lists the kids the issuer publishes now; nil skips the unpublished check.
	Published func() []string
	// Recorder receives each successful round; nil records nothing.
	Recorder Recorder
	// Registerer receives the probe's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Status is the probe's state for /readyz. It never makes the issuer unready.
type Status struct {
	ServiceAccount string `json:"serviceAccount"`
	Interval       string `json:"interval"`
	ProbesPerRound int    `json:"probesPerRound"`
	// Running is true on the replica that probes (the leader).
	Running     bool      `json:"running"`
	LastRound   time.Time `json:"lastRound,omitzero"`
	LastSuccess time.Time `json:"lastSuccess,omitzero"`
	// Signing are the kids the latest successful round saw.
	Signing []string `json:"signing,omitempty"`
	// Unpublished are kids the control plane signs with that the issuer does not publish: every
	// token they sign is rejected by every relying party.
	Unpublished []string `json:"unpublished,omitempty"`
	// Result is the latest round's outcome (ok, forbidden, not_found, unreachable, bad_token, error).
	Result    string `json:"result,omitempty"`
	LastError string `json:"lastError,omitempty"`
	// Fallback is true while the latest round failed or no current observation exists: a key's
	// retention then rests on its departure from the signing-key Secret and on what earlier
	// observations persisted. (The lifecycle keeps honouring the last observation for its
	// ValidFor, so one failed round does not expose a key that was just seen signing.)
	Fallback bool   `json:"fallback"`
	Hint     string `json:"hint,omitempty"`
}

// Prober runs probe rounds. Its Run is a leader task.
type Prober struct {
	cfg    Config
	logger *slog.Logger
	now    func() time.Time

	observed    *prometheus.GaugeVec
	lastSuccess prometheus.Gauge
	up          prometheus.Gauge
	probes      *prometheus.CounterVec

	mu         sync.Mutex
	status     Status
	latest     Observation
	lastLogged string // the last failure class or unpublished set logged, to log changes once
}

// New checks cfg and registers the probe's metrics.
func New(cfg Config) (*Prober, error) {
	if cfg.Minter == nil {
		return nil, errors.New("signing probe: no token minter")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.ProbesPerRound <= 0 {
		cfg.ProbesPerRound = DefaultProbesPerRound
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Prober{
		cfg:    cfg,
		logger: cfg.Logger.With("component", "signing-probe", "serviceAccount", cfg.ServiceAccount),
		now:    cfg.Now,
		observed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kube_oidc_issuer_signing_key_observed",
			Help: "1 for each kid the control plane signed a probe token with in the latest probe round.",
		}, []string{"kid"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kube_oidc_issuer_signing_probe_last_success_timestamp_seconds",
			Help: "Unix time of the latest probe round that saw a signing key.",
		}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kube_oidc_issuer_signing_probe_up",
			Help: "1 while the latest probe round saw a signing key, 0 while probing fails (retention then falls back to the departure rule).",
		}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kube_oidc_issuer_signing_probes_total",
			Help: "Probe tokens requested, by result (ok, forbidden, not_found, unreachable, bad_token, error).",
		}, []string{"result"}),
		status: Status{ServiceAccount: cfg.ServiceAccount, Interval: cfg.Interval.String(), ProbesPerRound: cfg.ProbesPerRound, Fallback: true},
	}
	if cfg.Registerer != nil {
		unpublished := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kube_oidc_issuer_signing_key_unpublished",
			Help: "1 while a kid the control plane signs with (latest probe round) is not in the published key set, else 0.",
		}, func() float64 {
			if len(p.Status().Unpublished) > 0 {
				return 1
			}
			return 0
		})
		for _, c := range []prometheus.Collector{p.observed, p.lastSuccess, p.up, p.probes, unpublished} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("signing probe metrics: %w", err)
			}
		}
	}
	return p, nil
}

// Status returns the probe's state, with the unpublished kids worked out against what is
// published now.
func (p *Prober) Status() Status {
	p.mu.Lock()
	st := p.status
	st.Signing = slices.Clone(st.Signing)
	latest := p.latest
	p.mu.Unlock()
	st.Fallback = st.Result != ResultOK || !latest.Current(p.now())
	st.Unpublished = p.unpublished(latest)
	return st
}

// Latest is the latest successful round's observation (zero before the first).
func (p *Prober) Latest() Observation {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.latest
}

func (p *Prober) unpublished(o Observation) []string {
	if p.cfg.Published == nil || len(o.KIDs) == 0 {
		return nil
	}
	pub := p.cfg.Published()
	var out []string
	for _, kid := range o.KIDs {
		if !slices.Contains(pub, kid) {
			out = append(out, kid)
		}
	}
	return out
}

// Run probes at once and then every interval until ctx is done. Run it on the leader only.
func (p *Prober) Run(ctx context.Context) error {
	p.setRunning(true)
	p.logger.Info("signing probe started", "interval", p.cfg.Interval, "probesPerRound", p.cfg.ProbesPerRound)
	defer func() {
		p.setRunning(false)
		p.observed.Reset()
		p.logger.Info("signing probe stopped")
	}()
	tick := time.NewTicker(p.cfg.Interval)
	defer tick.Stop()
	for {
		p.RunRound(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (p *Prober) setRunning(running bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status.Running = running
}

// RunRound runs one round, updates status and metrics, and hands a successful observation to the
// recorder.
func (p *Prober) RunRound(ctx context.Context) {
	obs, err := p.round(ctx)
	if ctx.Err() != nil {
		return
	}
	now := p.now()
	result, hint := classify(err)
	p.mu.Lock()
	p.status.LastRound, p.status.Result, p.status.Hint = now, result, hint
	if err != nil {
		p.status.LastError = err.Error()
	} else {
		p.status.LastError = ""
		p.status.LastSuccess, p.status.Signing = obs.At, obs.KIDs
		p.latest = obs
	}
	p.mu.Unlock()

	p.observed.Reset()
	if err != nil {
		p.up.Set(0)
		p.logOnce("failed:"+result, slog.LevelWarn, "signing probe failed: retention falls back to counting from a key's departure from the signing-key Secret",
			"result", result, "error", err, "hint", hint)
		return
	}
	p.up.Set(1)
	p.lastSuccess.Set(float64(obs.At.UnixNano()) / 1e9)
	for _, kid := range obs.KIDs {
		p.observed.WithLabelValues(kid).Set(1)
	}
	if unpublished := p.unpublished(obs); len(unpublished) > 0 {
		p.logOnce(fmt.Sprint("unpublished:", unpublished), slog.LevelWarn,
			"the control plane signs with a key the issuer does not publish: relying parties reject every token it signs; add the key to a key source (the signing-key Secret or a key file)",
			"unpublished", unpublished, "signing", obs.KIDs)
	} else {
		p.logOnce(fmt.Sprint("ok:", obs.KIDs), slog.LevelInfo, "signing probe: the control plane signs with", "kids", obs.KIDs)
	}
	if p.cfg.Recorder != nil {
		if err := p.cfg.Recorder.RecordSigning(ctx, obs); err != nil && ctx.Err() == nil {
			p.logger.Warn("recording the signing observation failed; the next round retries", "error", err)
			p.mu.Lock()
			p.status.LastError = "recording the observation: " + err.Error()
			p.mu.Unlock()
		}
	}
}

// logOnce logs msg when key differs from the previous call's, so a steady state is logged once
// and every change (a failure, a recovery, a new signing key) is logged when it happens.
func (p *Prober) logOnce(key string, level slog.Level, msg string, attrs ...any) {
	p.mu.Lock()
	same := p.lastLogged == key
	p.lastLogged = key
	p.mu.Unlock()
	if same {
		level = slog.LevelDebug
	}
	p.logger.Log(context.Background(), level, msg, attrs...)
}

// round makes the round's probes and builds the observation.
func (p *Prober) round(ctx context.Context) (Observation, error) {
	kids, err := Round(ctx, p.cfg.Minter, p.cfg.ProbesPerRound, p.cfg.Timeout, func(err error) {
		result, _ := classify(err)
		p.probes.WithLabelValues(result).Inc()
		if err != nil && ctx.Err() == nil {
			p.logger.Debug("probe failed", "result", result, "error", err)
		}
	})
	if err != nil {
		return Observation{}, err
	}
	return Observation{
		At:   p.now(),
		KIDs: kids,
		// Two missed rounds (and their probes' timeouts) before the observation goes stale.
		ValidFor: 2*p.cfg.Interval + time.Duration(p.cfg.ProbesPerRound)*p.cfg.Timeout,
	}, nil
}

// Round mints probes tokens one after the other, each within timeout (each on a new connection
// when the minter's client uses FreshConnections), and returns the kids they were signed with,
// sorted and unique. A round that saw at least one kid succeeds; when none did, it returns the
// first probe's error. observe, if not nil, sees every probe's outcome (nil for a success). The
// tokens go out of scope as soon as their headers are read.
func Round(ctx context.Context, m Minter, probes int, timeout time.Duration, observe func(error)) ([]string, error) {
	var (
		kids     []string
		firstErr error
	)
	for range probes {
		kid, err := probe(ctx, m, timeout)
		if observe != nil {
			observe(err)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if !slices.Contains(kids, kid) {
			kids = append(kids, kid)
		}
	}
	if len(kids) == 0 {
		return nil, firstErr
	}
	slices.Sort(kids)
	return kids, nil
}

// probe mints one token and returns the kid of its header.
func probe(ctx context.Context, m Minter, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	token, err := m.Mint(ctx)
	if err != nil {
		return "", err
	}
	h, err := ParseHeader(token)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnreadableToken, err)
	}
	return h.KeyID, nil
}
