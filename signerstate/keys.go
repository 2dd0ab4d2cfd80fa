package signerstate

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys/kubesource"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/kmskey"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/signer"
)

// adoptTimeout bounds one reconciliation of the cache with the state Secret.
const adoptTimeout = 30 * time.Second

// Config configures Keys.
type Config struct {
	// Secrets reaches the state Secret.
	Secrets corev1client.SecretsGetter
	// StateSecret is the signer-mode state's Secret.
	StateSecret lifecycle.Ref
	// CachePath is the local cache file (see package comment).
	CachePath string
	Logger    *slog.Logger
	// OnChange, if set, is called after every accepted state (for metrics).
	OnChange func(Status)
	// KMS signs with keys held in AWS KMS (records with a KMS key); nil refuses such a state.
	KMS kmskey.API
}

// Keys is a signer.KeySet over the signer-mode state: Snapshot is an atomic load of the snapshot
// built when the state last changed.
type Keys struct {
	cfg  Config
	log  *slog.Logger
	snap atomic.Pointer[signer.Snapshot]

	mu     sync.Mutex
	cur    *lifecycle.State // the state signed with; nil until one was accepted
	status Status
	// kmsKeys are the KMS keys opened so far, by ARN: opening one costs a kms:GetPublicKey.
	kmsKeys map[string]*kmskey.Signer
}

var _ signer.KeySet = (*Keys)(nil)

// Status is what /readyz and the metrics show.
type Status struct {
	// Ready: a state has been accepted, so Sign works.
	Ready bool `json:"ready"`
	// From is where the state signed with came from: "cache" or "secret".
	From       string    `json:"from,omitempty"`
	ID         string    `json:"id,omitempty"`
	Generation int64     `json:"generation,omitempty"`
	Active     string    `json:"active,omitempty"`
	Published  []string  `json:"published,omitempty"`
	Accepted   time.Time `json:"accepted,omitzero"`
	// SecretSynced: the latest read of the state Secret agreed with the state signed with.
	SecretSynced bool `json:"secretSynced"`
	// LastError is the latest problem with the state Secret or the cache; cleared by a good read.
	LastError string `json:"lastError,omitempty"`
	Errors    int    `json:"errors"`
}

// New loads the cache, if there is one: a signer with a cache can sign before the API server
// answers. A cache that cannot be used is an error (never signed with, never written to the
// state Secret); no cache is not, the state then comes from the Secret.
func New(cfg Config) (*Keys, error) {
	if cfg.Secrets == nil || cfg.StateSecret.Namespace == "" || cfg.StateSecret.Name == "" || cfg.CachePath == "" {
		return nil, errors.New("signer key state: needs a Kubernetes client, the state Secret and a cache path")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	k := &Keys{cfg: cfg, kmsKeys: map[string]*kmskey.Signer{}, log: cfg.Logger.With("component", "signer-state", "stateSecret", cfg.StateSecret.String())}
	st, err := ReadCache(cfg.CachePath)
	switch {
	case errors.Is(err, ErrNoCache):
		k.log.Info("no state cache yet: waiting for the state Secret", "cache", cfg.CachePath)
	case err != nil:
		return nil, err
	default:
		if err := k.accept(st, "cache", false); err != nil {
			return nil, fmt.Errorf("state cache %s: %w", cfg.CachePath, err)
		}
	}
	return k, nil
}

// Snapshot is the keys of the state accepted last; Unavailable before any.
func (k *Keys) Snapshot(context.Context) (signer.Snapshot, error) {
	s := k.snap.Load()
	if s == nil {
		return signer.Snapshot{}, errors.New("no key state yet: no state cache, and the state Secret has not been read")
	}
	return *s, nil
}

// Status returns the current status.
func (k *Keys) Status() Status {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := k.status
	s.Published = append([]string(nil), s.Published...)
	return s
}

// Run watches the state Secret until ctx ends, reconciling it with the state signed with.
func (k *Keys) Run(ctx context.Context) error {
	w := &kubesource.SecretWatcher[parsed]{
		Client:    k.cfg.Secrets,
		Namespace: k.cfg.StateSecret.Namespace,
		Name:      k.cfg.StateSecret.Name,
		Kind:      "state Secret",
		Parse:     parse,
		ReadError: k.readError,
		Logger:    k.log,
	}
	return w.Run(ctx, func(snap kubesource.SecretSnapshot[parsed]) { k.reconcile(ctx, snap) })
}

// parsed is the informer's cached form of the state Secret: the parsed state (private keys
// included: the signer needs them in memory anyway) or why it does not parse.
type parsed struct {
	st  *lifecycle.State
	err error
}

func parse(sec *corev1.Secret) parsed {
	st, err := lifecycle.ParseDocument(sec.Data[lifecycle.DataKey])
	if err != nil {
		return parsed{err: fmt.Errorf("state Secret entry %s: %w", lifecycle.DataKey, err)}
	}
	return parsed{st: st}
}

func (k *Keys) readError(err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("reading state Secret %s is forbidden: grant the signer get, list, watch, create and update on it: %w", k.cfg.StateSecret, err)
	}
	return fmt.Errorf("reading state Secret %s: %w", k.cfg.StateSecret, err)
}

// reconcile takes one view of the state Secret. A newer generation of the same state is accepted
// (signed with, written to the cache); a missing, empty or older one is replaced by the state
// signed with; anything else keeps the state signed with and says why.
func (k *Keys) reconcile(ctx context.Context, snap kubesource.SecretSnapshot[parsed]) {
	if snap.Err != nil {
		k.fail(snap.Err, "the state Secret cannot be read; signing on with the state signed with")
		return
	}
	k.mu.Lock()
	cur := k.cur
	k.mu.Unlock()
	remote := snap.Value.st
	switch {
	case snap.Exists && snap.Value.err != nil:
		k.fail(snap.Value.err, "the state Secret does not parse; signing on with the last good state (fix the Secret: nothing overwrites it)")
		return
	case cur == nil && (!snap.Exists || !remote.Signer):
		what := "does not exist"
		if snap.Exists {
			what = "holds no signer-mode state"
		}
		k.fail(fmt.Errorf("state Secret %s %s and there is no state cache: create one with `kube-oidc-issuer signer init --state-cache %s`", k.cfg.StateSecret, what, k.cfg.CachePath), "cannot sign")
		return
	case cur == nil:
		k.acceptRemote(remote)
		return
	case snap.Exists && remote.Signer && remote.ID == cur.ID && remote.Generation >= cur.Generation:
		if remote.Generation > cur.Generation {
			k.acceptRemote(remote)
			return
		}
		k.synced()
		return
	}
	// Missing, empty, older or foreign: Adopt writes ours where it may and refuses the rest.
	actx, cancel := context.WithTimeout(ctx, adoptTimeout)
	defer cancel()
	got, result, err := lifecycle.NewStore(k.cfg.Secrets, k.cfg.StateSecret.Namespace, k.cfg.StateSecret.Name).Adopt(actx, cur)
	if err != nil {
		k.fail(err, "could not reconcile the state cache with the state Secret; signing on with the state signed with")
		return
	}
	k.log.Info("state Secret reconciled with the state signed with", "result", string(result), "generation", got.Generation)
	if result == lifecycle.AdoptKept && got.Generation > cur.Generation {
		k.acceptRemote(got)
		return
	}
	k.synced()
}

func (k *Keys) acceptRemote(st *lifecycle.State) {
	if err := k.accept(st, "secret", true); err != nil {
		k.fail(err, "the state Secret's state cannot be signed with; signing on with the last good state")
	}
}

// accept makes st the state signed with: it builds the snapshot (refusing a state whose active key
// cannot sign), writes the cache when st came from the Secret, then swaps the snapshot in. The
// cache is written first so that a restart never signs with an older key than the one before it.
func (k *Keys) accept(st *lifecycle.State, from string, writeCache bool) error {
	snap, err := k.snapshotOf(st)
	if err != nil {
		return err
	}
	if writeCache {
		if err := WriteCache(k.cfg.CachePath, st); err != nil {
			// Signing with the new state is still right: it is what the cluster agreed on. The
			// next change retries the write; a restart meanwhile starts from the older cache and
			// catches up from the Secret.
			k.fail(err, "could not write the state cache")
		}
	}
	k.snap.Store(&snap)
	k.mu.Lock()
	prevActive := k.status.Active
	k.cur = st
	published := make([]string, len(snap.Published))
	for i, p := range snap.Published {
		published[i] = p.Public.KeyID()
	}
	k.status.Ready, k.status.From, k.status.ID, k.status.Generation = true, from, st.ID, st.Generation
	k.status.Active, k.status.Published, k.status.Accepted = snap.Active.KeyID(), published, time.Now()
	if from == "secret" {
		k.status.SecretSynced, k.status.LastError = true, ""
	}
	status := k.status
	k.mu.Unlock()
	attrs := []any{"from", from, "generation", st.Generation, "active", snap.Active.KeyID(), "published", published}
	if prevActive != "" && prevActive != snap.Active.KeyID() {
		k.log.Info("signing key switched", append(attrs, "previousActive", prevActive)...)
	} else {
		k.log.Info("key state accepted", attrs...)
	}
	if k.cfg.OnChange != nil {
		k.cfg.OnChange(status)
	}
	return nil
}

func (k *Keys) synced() {
	k.mu.Lock()
	k.status.SecretSynced, k.status.LastError = true, ""
	status := k.status
	k.mu.Unlock()
	if k.cfg.OnChange != nil {
		k.cfg.OnChange(status)
	}
}

func (k *Keys) fail(err error, msg string) {
	k.mu.Lock()
	k.status.SecretSynced = false
	k.status.LastError = err.Error()
	k.status.Errors++
	status := k.status
	k.mu.Unlock()
	k.log.Error(msg, "error", err)
	if k.cfg.OnChange != nil {
		k.cfg.OnChange(status)
	}
}

// snapshotOf is what the signer serves for st: the active key signs, every key is published,
// and the data timestamp is when the keys last changed.
func (k *Keys) snapshotOf(st *lifecycle.State) (signer.Snapshot, error) {
	active, ok := st.Active()
	if !ok {
		return signer.Snapshot{}, errors.New("the state has no active key")
	}
	var (
		priv crypto.Signer
		err  error
	)
	if active.KMSKey != "" {
		priv, err = k.kmsSigner(active.KMSKey)
	} else {
		priv, err = active.PrivateSigner()
	}
	if err != nil {
		return signer.Snapshot{}, err
	}
	sk, err := signer.NewSigningKey(priv)
	if err != nil {
		return signer.Snapshot{}, fmt.Errorf("active key %s: %w", active.KID, err)
	}
	if sk.KeyID() != active.KID {
		return signer.Snapshot{}, fmt.Errorf("active key %s: its private key has kid %s", active.KID, sk.KeyID())
	}
	snap := signer.Snapshot{Active: sk, Updated: st.KeysChanged}
	for _, r := range st.Keys {
		snap.Published = append(snap.Published, signer.PublishedKey{Public: r.Public})
	}
	return snap, nil
}

// kmsSigner opens the KMS key arn once; the opened signers are kept (a promote back and forth, or
// a state accepted again, costs no further GetPublicKey).
func (k *Keys) kmsSigner(arn string) (crypto.Signer, error) {
	if k.cfg.KMS == nil {
		return nil, fmt.Errorf("the active key is KMS key %s and this signer has no KMS client", arn)
	}
	k.mu.Lock()
	s, ok := k.kmsKeys[arn]
	k.mu.Unlock()
	if ok {
		return s, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), kmskey.CallTimeout)
	defer cancel()
	s, err := kmskey.Open(ctx, k.cfg.KMS, arn)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.kmsKeys[arn] = s
	k.mu.Unlock()
	return s, nil
}
