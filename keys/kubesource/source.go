package kubesource

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// Source is a keys.Source that watches one Secret.
//
// It watches through a SecretWatcher: its informer lists and watches with the field selector
// metadata.name=NAME in the Secret's namespace, so it needs only get, list and watch on that one
// Secret (an RBAC Role with resourceNames: [NAME]) and never sees any other Secret. Its cache holds
// the parsed public keys, not the Secret: private keys and unrelated entries are dropped as each
// object arrives.
type Source struct {
	client    corev1client.SecretsGetter
	namespace string
	name      string
	logger    *slog.Logger
}

var _ keys.Source = (*Source)(nil)

// New returns a source for the Secret namespace/name. A nil logger discards logs.
func New(client corev1client.SecretsGetter, namespace, name string, logger *slog.Logger) *Source {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Source{client: client, namespace: namespace, name: name}
	s.logger = logger.With("source", s.Name())
	return s
}

// Name is "secret/NAMESPACE/NAME".
func (s *Source) Name() string { return "secret/" + s.namespace + "/" + s.name }

// Run watches the Secret until ctx is done and reports what it yields: its keys (see
// KeysFromSecret), or an error when it is malformed, does not exist (once the first list has
// completed: it may be created later and is then reported), has been deleted, or cannot be read
// (for example RBAC forbids it: the informer keeps retrying with backoff). An observation is
// reported when it differs from the previous one, so relists and updates that do not change the
// keys are not reported again. Run returns nil once ctx is done and the informer has stopped; it
// returns an error at once only when the source is misconfigured (empty namespace or name).
func (s *Source) Run(ctx context.Context, report func(keys.Observation)) error {
	r := &run{Source: s}
	return s.watcher().Run(ctx, func(snap SecretSnapshot[parsed]) {
		if o, ok := r.observe(snap); ok {
			report(o)
		}
	})
}

// watcher is the SecretWatcher of the Secret: it caches the parsed keys, not the Secret.
func (s *Source) watcher() *SecretWatcher[parsed] {
	return &SecretWatcher[parsed]{
		Client:    s.client,
		Namespace: s.namespace,
		Name:      s.name,
		Kind:      "secret",
		Parse:     parseSecret,
		ReadError: s.readError,
		Logger:    s.logger,
	}
}

// readError explains a failed list or watch of the Secret.
func (s *Source) readError(err error) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("reading secret %s/%s is forbidden: grant the issuer's service account get, list and watch on secrets with resourceNames [%s] in namespace %s (a Role and RoleBinding there): %w",
			s.namespace, s.name, s.name, s.namespace, err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("reading secret %s/%s: the API server does not accept the issuer's credentials: %w", s.namespace, s.name, err)
	default:
		return fmt.Errorf("reading secret %s/%s: %w", s.namespace, s.name, err)
	}
}

// run is the state of one Run call; only the watcher's goroutine uses it.
type run struct {
	*Source
	seen    bool // the Secret existed at some point
	changes Changes
}

// observe returns the observation snap makes, and false when it is the one last reported.
func (r *run) observe(snap SecretSnapshot[parsed]) (keys.Observation, bool) {
	var o keys.Observation
	switch {
	case snap.Err != nil:
		o.Err = snap.Err
	case !snap.Exists && r.seen:
		o.Err = fmt.Errorf("secret %s/%s not found: it was deleted", r.namespace, r.name)
	case !snap.Exists:
		o.Err = fmt.Errorf("secret %s/%s not found", r.namespace, r.name)
	default:
		r.seen = true
		o.Keys, o.Err = snap.Value.keys, snap.Value.err
	}
	if !r.changes.Changed(o) {
		return o, false
	}
	if o.Err != nil {
		r.logger.Debug("secret yields no keys", "error", o.Err)
	} else {
		r.logger.Debug("secret keys", "keys", strings.TrimPrefix(observationSignature(o), "keys: "))
		for _, kid := range snap.Value.unlisted {
			r.logger.Warn("the secret's private key is missing from its public key bundle; publishing it anyway", "kid", kid)
		}
	}
	return o, true
}
