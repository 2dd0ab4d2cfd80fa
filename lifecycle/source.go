package lifecycle

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

// stateSource is the keys.Source of the state Secret: every replica watches it (an informer scoped
// to the one Secret) and publishes what the state says should be published, so a key staged through
// any replica is served by all of them within a watch event.
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
	ctx = logr.NewContext(ctx, logr.FromSlogHandler(s.logger.Handler()))
	selector := fields.OneTermEqualSelector("metadata.name", s.name).String()
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	var (
		mu      sync.Mutex
		readErr error
	)
	setReadErr := func(err error) {
		mu.Lock()
		readErr = err
		mu.Unlock()
		poke()
	}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = selector
			return s.secrets.Secrets(s.namespace).List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = selector
			w, err := s.secrets.Secrets(s.namespace).Watch(ctx, opts)
			if err == nil {
				setReadErr(nil)
			}
			return w, err
		},
	}
	inf := cache.NewSharedIndexInformerWithOptions(lw, &corev1.Secret{}, cache.SharedIndexInformerOptions{
		ObjectDescription: "state secret " + s.namespace + "/" + s.name,
	})
	if err := inf.SetTransform(transformState); err != nil {
		return fmt.Errorf("setting the informer transform: %w", err)
	}
	if err := inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
		switch {
		case ctx.Err() != nil, errors.Is(err, context.Canceled):
		case apierrors.IsResourceExpired(err), apierrors.IsGone(err), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		case apierrors.IsForbidden(err):
			setReadErr(fmt.Errorf("reading state Secret %s/%s is forbidden: grant the issuer get, list, watch and update on it: %w", s.namespace, s.name, err))
		default:
			setReadErr(fmt.Errorf("reading state Secret %s/%s: %w", s.namespace, s.name, err))
		}
	}); err != nil {
		return fmt.Errorf("setting the informer watch error handler: %w", err)
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	})
	if err != nil {
		return fmt.Errorf("adding the informer event handler: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { inf.RunWithContext(ctx) })
	defer wg.Wait()

	synced := reg.HasSyncedChecker().Done()
	isSynced := false
	last := ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-synced:
			synced, isSynced = nil, true
		case <-kick:
		}
		mu.Lock()
		o := keys.Observation{Err: readErr, AllowEmpty: true}
		mu.Unlock()
		if o.Err == nil {
			if !isSynced {
				continue
			}
			obj, exists, err := inf.GetStore().GetByKey(s.namespace + "/" + s.name)
			switch v, _ := obj.(*parsedState); {
			case err != nil:
				o.Err = fmt.Errorf("reading state Secret %s/%s from the informer cache: %w", s.namespace, s.name, err)
			case !exists:
				// No state yet: nothing staged, nothing retained.
			case v == nil:
				o.Err = fmt.Errorf("state Secret %s/%s: unexpected object %T in the informer cache", s.namespace, s.name, obj)
			default:
				o.Keys, o.Err = v.keys, v.err
			}
		}
		if sig := observationSignature(o); sig != last {
			last = sig
			report(o)
		}
	}
}

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

// parsedState is what the informer caches instead of the state Secret: the keys to publish. The
// private keys of staged keys do not stay in the cache.
type parsedState struct {
	metav1.TypeMeta
	metav1.ObjectMeta
	keys []keys.Key
	err  error
}

func (p *parsedState) DeepCopyObject() runtime.Object {
	c := *p
	p.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return &c
}

func transformState(obj any) (any, error) {
	sec, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil
	}
	p := &parsedState{ObjectMeta: metav1.ObjectMeta{
		Namespace: sec.Namespace, Name: sec.Name, UID: sec.UID, ResourceVersion: sec.ResourceVersion,
	}}
	st, err := ParseDocument(sec.Data[DataKey])
	if err != nil {
		p.err = fmt.Errorf("state Secret %s/%s entry %s: %w", sec.Namespace, sec.Name, DataKey, err)
	} else {
		p.keys = st.Published()
	}
	return p, nil
}
