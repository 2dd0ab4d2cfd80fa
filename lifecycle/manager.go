package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/kubeevent"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/signingprobe"
)

// DefaultClockSkew is added to every retention: tokens are accepted this long around their
// validity window by relying parties with a skewed clock.
const DefaultClockSkew = 5 * time.Minute

// resync bounds how long the leader goes without reconciling, whatever it is waiting for.
const resync = time.Minute

// signingRefresh is how old the persisted signing observation may grow before an unchanged one
// is written again: it keeps "last seen signing" in the admin API roughly current at one state
// write per refresh. Anything that matters for retention (other kids, an outgoing key still
// signing) is written at once.
const signingRefresh = 10 * time.Minute

// rollReminder is how often the leader repeats its warning (log and Event) while the control
// plane keeps signing with an outgoing key.
const rollReminder = time.Hour

// Ref names a Secret.
type Ref struct {
	Namespace, Name string
}

func (r Ref) String() string { return r.Namespace + "/" + r.Name }

// Config configures a Manager.
type Config struct {
	Secrets corev1client.SecretsGetter
	// Events receives the warning Events about the control plane (on the state Secret); nil
	// sends none.
	Events corev1client.EventsGetter
	// StateSecret holds the state document; the issuer creates it if it may.
	StateSecret Ref
	// SigningSecret is the cluster's signing-key Secret: promote writes into it, the leader
	// watches keys leaving it. Empty in signer mode.
	SigningSecret Ref
	// Signer is signer mode (KEP-740): the issuer's signers sign with the state's active key, so
	// promote is one write of the state, which every signer follows within SignerRefresh.
	Signer bool
	// SignerRefresh is how long the signers take at most to follow a change of the state (their
	// watch, plus kube-apiserver's refresh hint): an outgoing key may sign for that long after a
	// promote, so its retention counts from then.
	SignerRefresh time.Duration

	// MaxTokenLifetime is the longest lifetime of a token the cluster issues (the pod-identity
	// webhook asks for 24 h).
	MaxTokenLifetime time.Duration
	// ClockSkew is the leeway relying parties give expired tokens.
	ClockSkew time.Duration
	// MaxAge is the JWKS Cache-Control max-age.
	MaxAge time.Duration
	// PublishLead is how long a staged key must have been published before promote accepts it
	// without force: at least MaxAge, plus the time mirrors take to propagate.
	PublishLead time.Duration
	// RotateEvery enables scheduled rotation when positive.
	RotateEvery time.Duration
	// RotateAlgorithm is the algorithm of keys staged by scheduled rotation (default RS256).
	RotateAlgorithm string
	// NewKey makes the key Stage stages; nil generates one in memory (NewStagedRecord). Signer
	// mode may create it in AWS KMS instead (NewKMSRecord).
	NewKey func(ctx context.Context, alg string, now time.Time) (Record, error)

	// StateLabels are put on the state Secret when the Manager creates it, beside its own.
	StateLabels map[string]string

	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Retention is how long a previous key stays published after it left the signing-key Secret:
// the longest token lifetime, the clock skew and the JWKS max-age.
func (c Config) Retention() time.Duration { return c.MaxTokenLifetime + c.ClockSkew + c.MaxAge }

func (c Config) validate() error {
	var errs []error
	if c.Secrets == nil {
		errs = append(errs, errors.New("no Kubernetes client"))
	}
	if c.StateSecret.Namespace == "" || c.StateSecret.Name == "" {
		errs = append(errs, errors.New("the state Secret needs a namespace and a name"))
	}
	switch {
	case c.Signer && c.SigningSecret != Ref{}:
		errs = append(errs, errors.New("signer mode has no signing-key Secret"))
	case c.Signer:
		if c.SignerRefresh < 0 {
			errs = append(errs, errors.New("the signers' refresh must not be negative"))
		}
	case c.SigningSecret.Namespace == "" || c.SigningSecret.Name == "":
		errs = append(errs, errors.New("the signing-key Secret needs a namespace and a name"))
	}
	if c.StateSecret == c.SigningSecret {
		errs = append(errs, errors.New("the state Secret must not be the signing-key Secret"))
	}
	if c.MaxTokenLifetime <= 0 {
		errs = append(errs, errors.New("the maximum token lifetime must be positive"))
	}
	if c.ClockSkew < 0 || c.MaxAge < 0 || c.PublishLead < 0 || c.RotateEvery < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	switch c.RotateAlgorithm {
	case "", AlgorithmRS256, AlgorithmES256:
	default:
		errs = append(errs, fmt.Errorf("rotation algorithm %q: use %s or %s", c.RotateAlgorithm, AlgorithmRS256, AlgorithmES256))
	}
	return errors.Join(errs...)
}

// Manager performs the lifecycle operations. Stage, Promote, Remove and Snapshot may run on any
// replica at any time; RunLeader runs on the leader only. Every change goes through the Store's
// compare-and-swap, so they can all run concurrently.
type Manager struct {
	cfg     Config
	store   *Store
	logger  *slog.Logger
	now     func() time.Time
	trigger chan struct{}
	// stageMu makes this replica's stage requests take turns: a burst of them generates one key,
	// and the rest see it staged in their cheap pre-check instead of generating keys in vain.
	stageMu sync.Mutex

	mu     sync.Mutex
	status Status
	// signing is the signing probe's latest round on this replica (the leader): the keys that
	// must not be pruned while it is current.
	signing signingprobe.Observation
	// rollWarned is when the leader last warned that the control plane still signs with a kid.
	rollWarned map[string]time.Time
}

// Status is the leader loop's progress, for /readyz.
type Status struct {
	LastReconcile time.Time `json:"lastReconcile,omitzero"`
	LastError     string    `json:"lastError,omitempty"`
	NextCheck     time.Time `json:"nextCheck,omitzero"`
}

// NewManager checks cfg and returns a Manager.
func NewManager(cfg Config) (*Manager, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("key lifecycle: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RotateAlgorithm == "" {
		cfg.RotateAlgorithm = AlgorithmRS256
	}
	return &Manager{
		cfg:        cfg,
		store:      NewStore(cfg.Secrets, cfg.StateSecret.Namespace, cfg.StateSecret.Name).WithLabels(cfg.StateLabels),
		logger:     cfg.Logger.With("component", "key-lifecycle"),
		now:        cfg.Now,
		trigger:    make(chan struct{}, 1),
		rollWarned: map[string]time.Time{},
	}, nil
}

// Config returns the configuration in effect.
func (m *Manager) Config() Config { return m.cfg }

// Source is the keys.Source of the state: staged and previous keys, for the collector.
func (m *Manager) Source() keys.Source {
	return &stateSource{secrets: m.cfg.Secrets, namespace: m.cfg.StateSecret.Namespace, name: m.cfg.StateSecret.Name, logger: m.logger}
}

// WatchSigningSource wraps the signing-key Secret's source: it reports as before, and each good
// observation also wakes the leader loop, which then reconciles departures from a fresh read.
func (m *Manager) WatchSigningSource(src keys.Source) keys.Source {
	return &watchedSource{Source: src, changed: m.kick}
}

func (m *Manager) kick() {
	select {
	case m.trigger <- struct{}{}:
	default:
	}
}

type watchedSource struct {
	keys.Source
	changed func()
}

func (w *watchedSource) Run(ctx context.Context, report func(keys.Observation)) error {
	return w.Source.Run(ctx, func(o keys.Observation) {
		report(o)
		if o.Err == nil {
			w.changed()
		}
	})
}

// Snapshot is the state with what an operator needs to read it.
type Snapshot struct {
	State         *State
	StateSecret   Ref
	SigningSecret Ref
	PublishLead   time.Duration
	Retention     time.Duration
	// Bundle lists the kids in the signing-key Secret's public-key entry; nil if unreadable.
	Bundle []string
}

// Snapshot reads the current state (a quorum read, not a cache).
func (m *Manager) Snapshot(ctx context.Context) (Snapshot, error) {
	st, err := m.store.Read(ctx)
	if err != nil {
		return Snapshot{}, err
	}
	snap := Snapshot{State: st, StateSecret: m.cfg.StateSecret, SigningSecret: m.cfg.SigningSecret,
		PublishLead: m.cfg.PublishLead, Retention: m.cfg.Retention()}
	if m.cfg.Signer {
		return snap, nil
	}
	if sec, err := m.signingClient().Get(ctx, m.cfg.SigningSecret.Name, metav1.GetOptions{}); err == nil {
		snap.Bundle, _ = bundleKIDs(sec)
	}
	return snap, nil
}

// Stage generates a key for alg ("" is RS256) and stages it. It fails with ErrConflict if a key is
// already staged.
func (m *Manager) Stage(ctx context.Context, alg string) (Record, error) {
	m.stageMu.Lock()
	defer m.stageMu.Unlock()
	// A cheap check first: generating an RSA key costs far more than a read.
	if st, err := m.store.Read(ctx); err != nil {
		return Record{}, err
	} else if cur, ok := st.Staged(); ok {
		return Record{}, fmt.Errorf("%w: key %s is already staged: promote or withdraw it first", ErrConflict, cur.KID)
	}
	newKey := m.cfg.NewKey
	if newKey == nil {
		newKey = func(_ context.Context, alg string, now time.Time) (Record, error) { return NewStagedRecord(alg, now) }
	}
	rec, err := newKey(ctx, alg, m.now())
	if err != nil {
		return Record{}, err
	}
	if _, err := m.store.Update(ctx, func(s *State) error {
		if err := m.checkMode(s); err != nil {
			return err
		}
		return s.Stage(rec)
	}); err != nil {
		return Record{}, err
	}
	m.logger.Info("key staged", "kid", rec.KID, "alg", rec.Algorithm, "promotableAt", rec.PromotableAt(m.cfg.PublishLead))
	return rec, nil
}

// Promote makes the staged key kid the cluster's signing key: it marks the key as being promoted
// (refused unless staged, and before the publish lead unless force), writes it into the
// signing-key Secret in the Secret's layout with compare-and-swap, then reconciles the state with
// the Secret, which turns the key active and the outgoing key previous. kube-apiserver signs with
// it once the control plane is restarted with the Secret's contents.
func (m *Manager) Promote(ctx context.Context, kid string, force bool) (Record, error) {
	if m.cfg.Signer {
		return m.promoteSigner(ctx, kid, force)
	}
	// Record the outgoing key first, should the leader not have done so yet: it must become
	// previous (retained, later pruned from the bundle) when the Secret changes.
	if _, err := m.observe(ctx); err != nil {
		return Record{}, fmt.Errorf("cannot promote: %w", err)
	}
	var rec Record
	_, err := m.store.Update(ctx, func(s *State) error {
		r, err := s.StartPromote(kid, m.now(), m.cfg.PublishLead, force)
		rec = r
		return err
	})
	if err != nil {
		return Record{}, err
	}
	_, changed, err := updateSecret(ctx, m.signingClient(), m.cfg.SigningSecret.Name, func(sec *corev1.Secret) (bool, error) {
		return promoteInto(sec, rec)
	})
	if err != nil {
		if _, abortErr := m.store.Update(context.WithoutCancel(ctx), func(s *State) error { s.AbortPromote(kid); return nil }); abortErr != nil {
			m.logger.Warn("could not clear the promote mark; it expires by itself", "kid", kid, "error", abortErr, "expiresIn", promoteTimeout)
		}
		if apierrors.IsNotFound(err) {
			return Record{}, fmt.Errorf("%w: signing-key Secret %s not found", ErrConflict, m.cfg.SigningSecret)
		}
		return Record{}, fmt.Errorf("writing key %s into signing-key Secret %s: %w", kid, m.cfg.SigningSecret, err)
	}
	m.logger.Info("key written into the signing-key Secret", "kid", kid, "secret", m.cfg.SigningSecret.String(), "changed", changed, "forced", force)
	st, err := m.observe(ctx)
	if err != nil {
		return Record{}, fmt.Errorf("key %s is in signing-key Secret %s, but recording it failed (the leader retries): %w", kid, m.cfg.SigningSecret, err)
	}
	r, ok := st.Lookup(kid)
	if !ok {
		return Record{}, fmt.Errorf("key %s vanished from the state after its promote", kid)
	}
	return r, nil
}

// Remove withdraws a staged key or retires a previous key (see State.Remove); a retired key is
// pruned at once, from the state and from the verification bundle.
func (m *Manager) Remove(ctx context.Context, kid string, force bool) (Record, Removal, error) {
	var (
		rec Record
		how Removal
	)
	_, err := m.store.Update(ctx, func(s *State) error {
		if err := m.checkMode(s); err != nil {
			return err
		}
		var err error
		rec, how, err = s.Remove(kid, m.now(), force)
		return err
	})
	if err != nil {
		return Record{}, "", err
	}
	m.logger.Info("key removed", "kid", kid, "how", string(how), "forced", force)
	if how == Retired {
		// An operator retiring a key early (a compromise) overrides the probe: the key goes even if
		// the control plane still signs with it.
		keep := slices.DeleteFunc(m.signingNow(), func(k string) bool { return k == kid })
		if err := m.prune(ctx, keep); err != nil {
			return rec, how, fmt.Errorf("key %s is retired, but pruning it failed (the leader retries): %w", kid, err)
		}
	}
	return rec, how, nil
}

// observe reconciles the state with the keys active in the signing-key Secret now (State.Observe),
// reading the state first and the Secret second inside one compare-and-swap.
func (m *Manager) observe(ctx context.Context) (*State, error) {
	if m.cfg.Signer {
		// The state is what signs: there is no Secret to reconcile it with.
		st, err := m.store.Read(ctx)
		if err == nil {
			err = m.checkMode(st)
		}
		return st, err
	}
	var transitions []Transition
	st, err := m.store.Update(ctx, func(s *State) error {
		transitions = nil
		// Problems with the Secret's content are conflicts (an operator must act); API errors are not.
		sec, err := m.signingClient().Get(ctx, m.cfg.SigningSecret.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("%w: signing-key Secret %s not found", ErrConflict, m.cfg.SigningSecret)
		}
		if err != nil {
			return fmt.Errorf("reading signing-key Secret %s: %w", m.cfg.SigningSecret, err)
		}
		active, err := activeKeys(sec)
		if err != nil {
			return fmt.Errorf("%w: signing-key Secret %s: %w", ErrConflict, m.cfg.SigningSecret, err)
		}
		if len(active) == 0 {
			return fmt.Errorf("%w: signing-key Secret %s: %w", ErrConflict, m.cfg.SigningSecret, errNoSigningKey)
		}
		if s.SigningSecret != "" && s.SigningSecret != m.cfg.SigningSecret.String() {
			return fmt.Errorf("%w: state Secret %s follows signing-key Secret %s, not %s: use another state Secret", ErrConflict, m.cfg.StateSecret, s.SigningSecret, m.cfg.SigningSecret)
		}
		s.SigningSecret = m.cfg.SigningSecret.String()
		transitions = s.Observe(active, m.now(), m.cfg.Retention())
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, tr := range transitions {
		attrs := []any{"kid", tr.KID, "from", string(tr.From), "to", string(tr.To)}
		if tr.To == keys.PhasePrevious {
			r, _ := st.Lookup(tr.KID)
			attrs = append(attrs, "publishUntil", r.PublishUntil)
		}
		m.logger.Info("key lifecycle transition", attrs...)
	}
	return st, nil
}

// prune removes previous keys whose publish_until has passed: first from the signing-key Secret's
// verification bundle, then from the state, so a failure in between leaves the key published and
// the next prune finishes the job.
//
// keep are kids never pruned however expired: the keys the control plane is seen signing with.
func (m *Manager) prune(ctx context.Context, keep []string) error {
	st, err := m.store.Read(ctx)
	if err != nil {
		return err
	}
	expired := st.Expired(m.now(), keep)
	if len(expired) == 0 {
		return nil
	}
	kids := make([]string, len(expired))
	for i, r := range expired {
		kids[i] = r.KID
	}
	if m.cfg.Signer {
		return m.drop(ctx, kids, keep)
	}
	_, changed, err := updateSecret(ctx, m.signingClient(), m.cfg.SigningSecret.Name, func(sec *corev1.Secret) (bool, error) {
		return removeFromBundle(sec, kids)
	})
	switch {
	case err == nil:
		if changed {
			m.logger.Info("expired keys removed from the verification bundle", "kids", kids, "secret", m.cfg.SigningSecret.String())
		}
	case apierrors.IsNotFound(err), errors.Is(err, ErrConflict):
		// No Secret, or one without a private-key entry: there is no bundle of ours to prune.
	default:
		return fmt.Errorf("removing expired keys %v from signing-key Secret %s: %w", kids, m.cfg.SigningSecret, err)
	}
	return m.drop(ctx, kids, keep)
}

// drop removes the expired keys among kids from the state.
func (m *Manager) drop(ctx context.Context, kids, keep []string) error {
	var dropped []string
	if _, err := m.store.Update(ctx, func(s *State) error {
		dropped = s.Drop(kids, m.now(), keep)
		return nil
	}); err != nil {
		return err
	}
	if len(dropped) > 0 {
		m.logger.Info("expired keys pruned: no longer published", "kids", dropped)
	}
	return nil
}

// Reconcile is one round of the leader's background work: record departures from the signing-key
// Secret, prune expired keys, and take the next scheduled-rotation step. It returns when it wants
// to run next.
func (m *Manager) Reconcile(ctx context.Context) (time.Time, error) {
	var errs []error
	if _, err := m.observe(ctx); err != nil {
		errs = append(errs, fmt.Errorf("recording departures: %w", err))
	}
	if err := m.prune(ctx, m.signingNow()); err != nil {
		errs = append(errs, fmt.Errorf("pruning: %w", err))
	}
	step, err := m.rotate(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("scheduled rotation: %w", err))
	}
	now := m.now()
	next := now.Add(resync)
	st, readErr := m.store.Read(ctx)
	if readErr == nil {
		if d := st.NextDeadline(); !d.IsZero() && d.Before(next) {
			next = d
		}
	}
	if !step.At.IsZero() && step.At.Before(next) {
		next = step.At
	}
	return next, errors.Join(errs...)
}

// rotate takes the next scheduled-rotation step, if it is due.
func (m *Manager) rotate(ctx context.Context) (RotationStep, error) {
	if m.cfg.RotateEvery <= 0 {
		return RotationStep{}, nil
	}
	st, err := m.store.Read(ctx)
	if err != nil {
		return RotationStep{}, err
	}
	step := st.NextRotationStep(m.now(), m.cfg.RotateEvery, m.cfg.PublishLead)
	switch {
	case step.Stage:
		m.logger.Info("scheduled rotation: staging a new key", "every", m.cfg.RotateEvery)
		if _, err := m.Stage(ctx, m.cfg.RotateAlgorithm); err != nil && !errors.Is(err, ErrConflict) {
			return step, err
		}
		return RotationStep{At: m.now().Add(m.cfg.PublishLead)}, nil
	case step.Promote != "":
		m.logger.Info("scheduled rotation: promoting the staged key", "kid", step.Promote)
		if _, err := m.Promote(ctx, step.Promote, false); err != nil && !errors.Is(err, ErrConflict) {
			return step, err
		}
		return RotationStep{}, nil
	}
	return step, nil
}

// RunLeader runs the background work until ctx is done: it reconciles at once, whenever the
// signing-key Secret's source reports a change, and when the next deadline (a publish_until, a
// scheduled-rotation step, the periodic resync) comes. Run it on the leader only. It returns nil
// when ctx is done.
func (m *Manager) RunLeader(ctx context.Context) error {
	m.logger.Info("key lifecycle background work started", "retention", m.cfg.Retention(), "publishLead", m.cfg.PublishLead, "rotateEvery", m.cfg.RotateEvery)
	defer m.logger.Info("key lifecycle background work stopped")
	backoff := reconcileBackoff()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-m.trigger:
		}
		next, err := m.Reconcile(ctx)
		if ctx.Err() != nil {
			return nil
		}
		now := m.now()
		if err != nil {
			retry := backoff.Step()
			if retry < next.Sub(now) {
				next = now.Add(retry)
			}
			m.logger.Warn("key lifecycle reconcile failed; retrying", "error", err, "retryAt", next)
		} else {
			backoff = reconcileBackoff()
		}
		m.setStatus(now, err, next)
		timer.Reset(max(next.Sub(now), 0))
	}
}

// reconcileBackoff is the wait after a failed reconcile (unless something is due sooner): 2s
// doubling to resync, without jitter (only the leader reconciles). Steps is unbounded in practice,
// so only Cap ends the doubling; the leader retries for as long as it leads.
func reconcileBackoff() wait.Backoff {
	return wait.Backoff{Duration: 2 * time.Second, Factor: 2, Cap: resync, Steps: math.MaxInt32}
}

func (m *Manager) setStatus(at time.Time, err error, next time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.status = Status{LastReconcile: at, NextCheck: next}
	if err != nil {
		m.status.LastError = err.Error()
	}
}

// Status is the leader loop's last round; zero on replicas that are not leading.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

func (m *Manager) signingClient() corev1client.SecretInterface {
	return m.cfg.Secrets.Secrets(m.cfg.SigningSecret.Namespace)
}

// signingNow are the kids the latest signing probe round saw, while that round is current; nil
// without a probe or once it has stopped answering (retention then rests on publish_until alone).
func (m *Manager) signingNow() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.signing.Current(m.now()) {
		return nil
	}
	return slices.Clone(m.signing.KIDs)
}

// RecordSigning takes a signing probe round (signingprobe.Recorder): the kids it saw are never
// pruned while the observation is current, and it is persisted in the state (State.ObserveSigning)
// so that a previous key's retention counts from the last time it was seen signing, on whichever
// replica leads next. While the control plane still signs with a key that has left the
// signing-key Secret more than the publish lead after the new key's promote, it warns: in the
// log and with an Event on the state Secret, at most once per rollReminder per key.
func (m *Manager) RecordSigning(ctx context.Context, obs signingprobe.Observation) error {
	m.mu.Lock()
	prev := m.signing
	m.signing = obs
	m.mu.Unlock()
	if !slices.Equal(prev.KIDs, obs.KIDs) {
		m.kick() // a key that stopped signing may now be prunable, or one must not be
	}
	var changed bool
	st, err := m.store.Update(ctx, func(s *State) error {
		// In signer mode the signers create the state: an observation recorded before that would
		// create a Secret-mode state, which they would then refuse as foreign.
		if err := m.checkMode(s); err != nil {
			return err
		}
		changed = s.ObserveSigning(obs.KIDs, obs.At, m.cfg.Retention(), signingRefresh)
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording what the control plane signs with: %w", err)
	}
	if changed {
		for _, r := range st.Keys {
			if r.Phase == keys.PhasePrevious && st.Signing.Signs(r.KID) {
				m.logger.Debug("previous key still signs: retention extended", "kid", r.KID, "publishUntil", r.PublishUntil)
			}
		}
	}
	m.warnUnrolled(ctx, st)
	return nil
}

// warnUnrolled tells the operator to roll the control plane when it keeps signing with an
// outgoing key for longer than the publish lead after the new key's promote.
func (m *Manager) warnUnrolled(ctx context.Context, st *State) {
	active, ok := st.NewestActive()
	outgoing := st.OutgoingSigning()
	now := m.now()
	if !ok || len(outgoing) == 0 || now.Sub(active.Promoted) <= m.cfg.PublishLead {
		return
	}
	for _, old := range outgoing {
		m.mu.Lock()
		due := now.Sub(m.rollWarned[old.KID]) >= rollReminder
		if due {
			m.rollWarned[old.KID] = now
		}
		m.mu.Unlock()
		if !due {
			continue
		}
		msg := fmt.Sprintf("the control plane still signs with key %s, %s after key %s was promoted into signing-key Secret %s: roll the control plane (restart kube-apiserver with the Secret's contents); key %s stays published until %s",
			old.KID, now.Sub(active.Promoted).Round(time.Second), active.KID, m.cfg.SigningSecret, old.KID, old.PublishUntil.UTC().Format(time.RFC3339))
		if m.cfg.Signer {
			msg = fmt.Sprintf("the control plane still signs with key %s, %s after key %s was promoted in state Secret %s: a signer does not follow the state (check every control-plane node's kube-oidc-issuer signer: its log, /readyz and its access to the state Secret); key %s stays published until %s",
				old.KID, now.Sub(active.Promoted).Round(time.Second), active.KID, m.cfg.StateSecret, old.KID, old.PublishUntil.UTC().Format(time.RFC3339))
		}
		m.logger.Warn("roll the control plane: it still signs with the outgoing key", "kid", old.KID, "active", active.KID,
			"promoted", active.Promoted, "publishUntil", old.PublishUntil)
		m.event(ctx, "ControlPlaneNotRolled", msg)
	}
}

// event records a Warning Event on the state Secret. Failing to is logged, never fatal: the
// metric and the log say the same.
func (m *Manager) event(ctx context.Context, reason, msg string) {
	if m.cfg.Events == nil {
		return
	}
	ref := m.cfg.StateSecret
	if err := kubeevent.WarnOnSecret(ctx, m.cfg.Events, ref.Namespace, ref.Name, reason, msg, m.now()); err != nil {
		m.logger.Warn("could not record an Event on the state Secret", "reason", reason, "error", err)
	}
}

// checkMode refuses to change a state of the other mode: a signer-mode state must never be
// reconciled with a signing-key Secret, nor a Secret-mode state be given to signers.
func (m *Manager) checkMode(s *State) error {
	switch {
	case m.cfg.Signer && !s.Signer:
		return fmt.Errorf("%w: state Secret %s holds no signer-mode state: create it with `kube-oidc-issuer signer init` and start the signer, which writes the state Secret from its cache", ErrConflict, m.cfg.StateSecret)
	case !m.cfg.Signer && s.Signer:
		return fmt.Errorf("%w: state Secret %s holds a signer-mode state: serve it without --secret (signer mode), or use another state Secret", ErrConflict, m.cfg.StateSecret)
	}
	return nil
}

// promoteSigner is Promote in signer mode: one compare-and-swap turns the staged key active and
// the active key previous (State.PromoteSigner). The signers sign with the new key once they have
// seen the write, within SignerRefresh; the outgoing key is retained from then.
func (m *Manager) promoteSigner(ctx context.Context, kid string, force bool) (Record, error) {
	var transitions []Transition
	st, err := m.store.Update(ctx, func(s *State) error {
		if err := m.checkMode(s); err != nil {
			return err
		}
		var err error
		transitions, err = s.PromoteSigner(kid, m.now(), m.cfg.PublishLead, m.cfg.SignerRefresh+m.cfg.Retention(), force)
		return err
	})
	if err != nil {
		return Record{}, err
	}
	for _, tr := range transitions {
		r, _ := st.Lookup(tr.KID)
		m.logger.Info("key lifecycle transition", "kid", tr.KID, "from", string(tr.From), "to", string(tr.To), "publishUntil", r.PublishUntil, "forced", force)
	}
	r, ok := st.Lookup(kid)
	if !ok {
		return Record{}, fmt.Errorf("key %s vanished from the state after its promote", kid)
	}
	return r, nil
}
