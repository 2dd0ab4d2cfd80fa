package kubesource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// Source is a keys.Source that watches one Secret.
//
// Its informer lists and watches with the field selector metadata.name=NAME in the Secret's
// namespace, so it needs only get, list and watch on that one Secret (an RBAC Role with
// resourceNames: [NAME]) and never sees any other Secret. Its cache holds the parsed public keys,
// not the Secret: private keys and unrelated entries are dropped as each object arrives.
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
	if s.namespace == "" || s.name == "" {
		// An empty name would make the field selector match every Secret in the namespace.
		return fmt.Errorf("secret source needs a namespace and a name, got %q/%q", s.namespace, s.name)
	}
	// client-go logs through the logr logger in the context (klog.FromContext).
	ctx = logr.NewContext(ctx, logr.FromSlogHandler(s.logger.Handler()))
	r := &run{Source: s, kick: make(chan struct{}, 1)}

	selector := fields.OneTermEqualSelector("metadata.name", s.name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = selector
			list, err := s.client.Secrets(s.namespace).List(ctx, opts)
			if err != nil {
				return nil, err
			}
			return list, nil
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = selector
			w, err := s.client.Secrets(s.namespace).Watch(ctx, opts)
			if err != nil {
				return nil, err
			}
			// Only a watch clears a read error: a successful list followed by a forbidden watch
			// must not flap between keys and error on every retry.
			r.setReadErr(nil)
			return w, nil
		},
	}
	inf := cache.NewSharedIndexInformerWithOptions(lw, &corev1.Secret{}, cache.SharedIndexInformerOptions{
		ObjectDescription: "secret " + s.namespace + "/" + s.name,
	})
	if err := inf.SetTransform(transform); err != nil {
		return fmt.Errorf("setting the informer transform: %w", err)
	}
	if err := inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
		r.watchError(ctx, err)
	}); err != nil {
		return fmt.Errorf("setting the informer watch error handler: %w", err)
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { r.poke() },
		UpdateFunc: func(any, any) { r.poke() },
		DeleteFunc: func(any) { r.poke() },
	})
	if err != nil {
		return fmt.Errorf("adding the informer event handler: %w", err)
	}
	r.store = inf.GetStore()

	var wg sync.WaitGroup
	wg.Go(func() { inf.RunWithContext(ctx) })
	defer wg.Wait()

	synced := reg.HasSyncedChecker().Done()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-synced:
			synced, r.synced = nil, true
		case <-r.kick:
		}
		if o, ok := r.observe(); ok {
			report(o)
		}
	}
}

// run is the state of one Run call.
type run struct {
	*Source
	store cache.Store
	kick  chan struct{}

	mu      sync.Mutex
	readErr error // why the last list or watch failed; nil once a watch started

	// Only the Run goroutine uses these.
	synced  bool
	seen    bool   // the Secret existed at some point
	lastSig string // what was last reported
}

func (r *run) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *run) setReadErr(err error) {
	r.mu.Lock()
	changed := (r.readErr == nil) != (err == nil)
	r.readErr = err
	r.mu.Unlock()
	if changed || err != nil {
		r.poke()
	}
}

// watchError is called by the reflector when a list, or the start of a watch, fails.
func (r *run) watchError(ctx context.Context, err error) {
	switch {
	case ctx.Err() != nil, errors.Is(err, context.Canceled):
		return
	case apierrors.IsResourceExpired(err), apierrors.IsGone(err), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		// A watch that ended normally or must resume from a fresh list: the reflector relists.
		r.logger.Debug("watch of the secret restarts", "reason", err)
		return
	case apierrors.IsForbidden(err):
		err = fmt.Errorf("reading secret %s/%s is forbidden: grant the issuer's service account get, list and watch on secrets with resourceNames [%s] in namespace %s (a Role and RoleBinding there): %w",
			r.namespace, r.name, r.name, r.namespace, err)
	case apierrors.IsUnauthorized(err):
		err = fmt.Errorf("reading secret %s/%s: the API server does not accept the issuer's credentials: %w", r.namespace, r.name, err)
	default:
		err = fmt.Errorf("reading secret %s/%s: %w", r.namespace, r.name, err)
	}
	r.logger.Debug("list or watch of the secret failed; retrying", "error", err)
	r.setReadErr(err)
}

// observe returns the observation due now, and false when there is nothing new to report.
func (r *run) observe() (keys.Observation, bool) {
	r.mu.Lock()
	readErr := r.readErr
	r.mu.Unlock()

	var o keys.Observation
	var unlisted []string
	switch {
	case readErr != nil:
		o.Err = readErr
	case !r.synced:
		return o, false
	default:
		obj, exists, err := r.store.GetByKey(r.namespace + "/" + r.name)
		p, isParsed := obj.(*parsedSecret)
		switch {
		case err != nil:
			o.Err = fmt.Errorf("reading secret %s/%s from the informer cache: %w", r.namespace, r.name, err)
		case !exists && r.seen:
			o.Err = fmt.Errorf("secret %s/%s not found: it was deleted", r.namespace, r.name)
		case !exists:
			o.Err = fmt.Errorf("secret %s/%s not found", r.namespace, r.name)
		case !isParsed:
			o.Err = fmt.Errorf("secret %s/%s: unexpected object %T in the informer cache", r.namespace, r.name, obj)
		default:
			r.seen = true
			o.Keys, o.Err, unlisted = p.keys, p.err, p.unlisted
		}
	}

	sig := signature(o)
	if sig == r.lastSig {
		return o, false
	}
	r.lastSig = sig
	if o.Err != nil {
		r.logger.Debug("secret yields no keys", "error", o.Err)
	} else {
		r.logger.Debug("secret keys", "keys", sig)
		for _, kid := range unlisted {
			r.logger.Warn("the secret's private key is missing from its public key bundle; publishing it anyway", "kid", kid)
		}
	}
	return o, true
}

// signature identifies an observation's content, to report only changes.
func signature(o keys.Observation) string {
	if o.Err != nil {
		return "error: " + o.Err.Error()
	}
	parts := make([]string, len(o.Keys))
	for i, k := range o.Keys {
		parts[i] = string(k.Phase) + ":" + k.Public.KeyID()
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// parsedSecret is what the informer caches instead of a Secret: its identity and the keys it
// yields. Neither private keys nor any other entry of the Secret stay in memory.
type parsedSecret struct {
	metav1.TypeMeta
	metav1.ObjectMeta
	keys     []keys.Key
	err      error
	unlisted []string
}

// DeepCopyObject implements runtime.Object. The keys are immutable and are shared.
func (p *parsedSecret) DeepCopyObject() runtime.Object {
	c := *p
	p.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return &c
}

// transform turns a Secret into a parsedSecret as the informer receives it. It is idempotent, as
// client-go requires.
func transform(obj any) (any, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil
	}
	p := parseSecret(s)
	return &parsedSecret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:       s.Namespace,
			Name:            s.Name,
			UID:             s.UID,
			ResourceVersion: s.ResourceVersion,
		},
		keys:     p.keys,
		err:      p.err,
		unlisted: p.unlisted,
	}, nil
}
