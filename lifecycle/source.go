package lifecycle

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys/kubesource"
)

// stateSource is the keys.Source of the state Secret: every replica watches it (a
// kubesource.SecretWatcher, scoped to the one Secret) and publishes what the state says should be
// published, so a key staged through any replica is served by all of them within a watch event.
type stateSource struct {
	secrets   corev1client.SecretsGetter
	namespace string
	name      string
	logger    *slog.Logger
}

var _ keys.Source = (*stateSource)(nil)

func (s *stateSource) Name() string { return "lifecycle/" + s.namespace + "/" + s.name }

// Run reports the state's published keys on every change. A missing Secret is the empty state (a
// good observation without keys); a Secret whose document does not parse, or that cannot be read,
// is an error observation, so the last good keys stay published.
func (s *stateSource) Run(ctx context.Context, report func(keys.Observation)) error {
	w := &kubesource.SecretWatcher[publishedState]{
		Client:    s.secrets,
		Namespace: s.namespace,
		Name:      s.name,
		Kind:      "state Secret",
		Parse:     parseState,
		ReadError: s.readError,
		Logger:    s.logger,
	}
	var changes kubesource.Changes
	return w.Run(ctx, func(snap kubesource.SecretSnapshot[publishedState]) {
		// Without the Secret there is no state yet: nothing staged, nothing retained.
		o := keys.Observation{Keys: snap.Value.keys, Err: snap.Err, AllowEmpty: true}
		if o.Err == nil {
			o.Err = snap.Value.err
		}
		if changes.Changed(o) {
			report(o)
		}
	})
}

// readError explains a failed list or watch of the state Secret.
func (s *stateSource) readError(err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("reading state Secret %s/%s is forbidden: grant the issuer get, list, watch and update on it: %w", s.namespace, s.name, err)
	}
	return fmt.Errorf("reading state Secret %s/%s: %w", s.namespace, s.name, err)
}

// publishedState is what the informer caches instead of the state Secret: the keys to publish, or
// why the document does not parse. The private keys of staged keys do not stay in the cache.
type publishedState struct {
	keys []keys.Key
	err  error
}

// PublishedKeys returns the keys a state Secret says to publish (staged and previous keys, public
// halves only), or why its document does not parse. A fleet reads its clusters' state Secrets
// through one shared watch with it.
func PublishedKeys(sec *corev1.Secret) ([]keys.Key, error) {
	p := parseState(sec)
	return p.keys, p.err
}

func parseState(sec *corev1.Secret) publishedState {
	st, err := ParseDocument(sec.Data[DataKey])
	if err != nil {
		return publishedState{err: fmt.Errorf("state Secret %s/%s entry %s: %w", sec.Namespace, sec.Name, DataKey, err)}
	}
	return publishedState{keys: st.Published()}
}
