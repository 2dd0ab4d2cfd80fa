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

// SecretWatcher watches one Secret and keeps only what Parse makes of it. It is the building block
// of the Secret-backed key sources (Source here, the lifecycle state source). It guarantees:
//
//   - Scoped to one name: its informer lists and watches with the field selector
//     metadata.name=Name in Namespace, so it needs only get, list and watch on that one Secret (an
//     RBAC Role with resourceNames: [Name]) and never sees another Secret. Run refuses an empty
//     Namespace or Name, which would widen the selector.
//   - Only T is cached: Parse runs as each object arrives (the informer's transform); the Secret,
//     its data (private keys) and the rest of its metadata are dropped at once.
//   - Read errors: a list or watch that fails (forbidden, unreachable API server...) makes
//     SecretSnapshot.Err the error ReadError makes of it, until a watch starts again: only a watch
//     clears it, so a list that succeeds followed by a watch that is forbidden does not flap.
//     Routine watch restarts (expired, gone, EOF) and stopping are not read errors.
//   - Synced: apart from read errors, nothing is delivered before the first list has reached the
//     cache, so a snapshot with Exists false means the Secret does not exist, not "not listed yet".
//   - Change callback: Run calls onChange, serialised on its own goroutine, with the current
//     snapshot once the cache has synced, on every add, update or delete of the Secret, and when
//     the read error is set or cleared. Snapshots may repeat (relists, metadata-only updates): use
//     Changes to report only what changed.
type SecretWatcher[T any] struct {
	Client    corev1client.SecretsGetter
	Namespace string
	Name      string
	// Kind names the Secret in errors and logs: "secret", "state Secret".
	Kind string
	// Parse turns a Secret into what is cached. It must not keep the Secret or its data.
	Parse func(*corev1.Secret) T
	// ReadError explains a failed list or watch (wrapping err). Nil means "reading KIND NS/NAME: err".
	ReadError func(err error) error
	// Logger receives client-go's logs and the watcher's debug logs. Nil discards them.
	Logger *slog.Logger
}

// SecretSnapshot is what a SecretWatcher holds at one moment.
type SecretSnapshot[T any] struct {
	// Err is why the Secret cannot be read now (a read error, or the cache failed); Exists and
	// Value are then unset.
	Err error
	// Exists tells whether the Secret exists; Value is what Parse made of it.
	Exists bool
	Value  T
}

// Run watches the Secret until ctx is done, calling onChange as described on SecretWatcher. It
// returns nil once ctx is done and the informer has stopped, or an error at once when the watcher
// is misconfigured.
func (w *SecretWatcher[T]) Run(ctx context.Context, onChange func(SecretSnapshot[T])) error {
	if w.Namespace == "" || w.Name == "" {
		// An empty name would make the field selector match every Secret in the namespace.
		return fmt.Errorf("%s source needs a namespace and a name, got %q/%q", w.Kind, w.Namespace, w.Name)
	}
	r := w.newRun()
	// client-go logs through the logr logger in the context (klog.FromContext).
	ctx = logr.NewContext(ctx, logr.FromSlogHandler(r.logger.Handler()))

	selector := fields.OneTermEqualSelector("metadata.name", w.Name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = selector
			list, err := w.Client.Secrets(w.Namespace).List(ctx, opts)
			if err != nil {
				return nil, err
			}
			return list, nil
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = selector
			wi, err := w.Client.Secrets(w.Namespace).Watch(ctx, opts)
			if err != nil {
				return nil, err
			}
			// Only a watch clears a read error: a successful list followed by a forbidden watch
			// must not flap between the Secret and an error on every retry.
			r.setReadErr(nil)
			return wi, nil
		},
	}
	inf := cache.NewSharedIndexInformerWithOptions(lw, &corev1.Secret{}, cache.SharedIndexInformerOptions{
		ObjectDescription: w.Kind + " " + w.Namespace + "/" + w.Name,
	})
	if err := inf.SetTransform(w.transform); err != nil {
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
		if s, ok := r.snapshot(); ok {
			onChange(s)
		}
	}
}

// secretRun is the state of one SecretWatcher.Run call.
type secretRun[T any] struct {
	*SecretWatcher[T]
	logger *slog.Logger
	store  cache.Store
	kick   chan struct{}

	mu      sync.Mutex
	readErr error // why the last list or watch failed; nil once a watch started

	synced bool // only the Run goroutine uses it
}

func (w *SecretWatcher[T]) newRun() *secretRun[T] {
	logger := w.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &secretRun[T]{SecretWatcher: w, logger: logger, kick: make(chan struct{}, 1)}
}

func (r *secretRun[T]) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *secretRun[T]) setReadErr(err error) {
	r.mu.Lock()
	changed := (r.readErr == nil) != (err == nil)
	r.readErr = err
	r.mu.Unlock()
	if changed || err != nil {
		r.poke()
	}
}

// watchError is called by the reflector when a list, or the start of a watch, fails.
func (r *secretRun[T]) watchError(ctx context.Context, err error) {
	switch {
	case ctx.Err() != nil, errors.Is(err, context.Canceled):
		return
	case apierrors.IsResourceExpired(err), apierrors.IsGone(err), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		// A watch that ended normally or must resume from a fresh list: the reflector relists.
		r.logger.Debug("watch of the secret restarts", "reason", err)
		return
	case r.ReadError != nil:
		err = r.ReadError(err)
	default:
		err = fmt.Errorf("reading %s %s/%s: %w", r.Kind, r.Namespace, r.Name, err)
	}
	r.logger.Debug("list or watch of the secret failed; retrying", "error", err)
	r.setReadErr(err)
}

// snapshot returns what the watcher holds now, and false when there is nothing to deliver yet.
func (r *secretRun[T]) snapshot() (SecretSnapshot[T], bool) {
	r.mu.Lock()
	readErr := r.readErr
	r.mu.Unlock()

	var s SecretSnapshot[T]
	switch {
	case readErr != nil:
		s.Err = readErr
		return s, true
	case !r.synced:
		return s, false
	}
	obj, exists, err := r.store.GetByKey(r.Namespace + "/" + r.Name)
	c, isCached := obj.(*cached[T])
	switch {
	case err != nil:
		s.Err = fmt.Errorf("reading %s %s/%s from the informer cache: %w", r.Kind, r.Namespace, r.Name, err)
	case !exists:
	case !isCached:
		s.Err = fmt.Errorf("%s %s/%s: unexpected object %T in the informer cache", r.Kind, r.Namespace, r.Name, obj)
	default:
		s.Exists, s.Value = true, c.value
	}
	return s, true
}

// cached is what the informer caches instead of a Secret: its identity and what Parse made of it.
type cached[T any] struct {
	metav1.TypeMeta
	metav1.ObjectMeta
	value T
}

// DeepCopyObject implements runtime.Object. The value is copied shallowly: it must be immutable.
func (c *cached[T]) DeepCopyObject() runtime.Object {
	out := *c
	c.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	return &out
}

// transform turns a Secret into a cached value as the informer receives it. It is idempotent, as
// client-go requires.
func (w *SecretWatcher[T]) transform(obj any) (any, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil
	}
	return &cached[T]{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:       s.Namespace,
			Name:            s.Name,
			UID:             s.UID,
			ResourceVersion: s.ResourceVersion,
		},
		value: w.Parse(s),
	}, nil
}

// Changes filters a source's observations down to changes. Its zero value is ready.
type Changes struct {
	last string
}

// Changed reports whether o differs from the observation last passed to Changed: another error
// text, or other key IDs or phases. The first observation is always a change.
func (c *Changes) Changed(o keys.Observation) bool {
	sig := observationSignature(o)
	if sig == c.last {
		return false
	}
	c.last = sig
	return true
}

// observationSignature identifies an observation's content; never "".
func observationSignature(o keys.Observation) string {
	if o.Err != nil {
		return "error: " + o.Err.Error()
	}
	parts := make([]string, len(o.Keys))
	for i, k := range o.Keys {
		parts[i] = string(k.Phase) + ":" + k.Public.KeyID()
	}
	slices.Sort(parts)
	return "keys: " + strings.Join(parts, ",")
}
