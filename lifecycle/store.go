package lifecycle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// DataKey is the Secret entry that holds the state document.
const DataKey = "state.json"

// Labels the issuer puts on a state Secret it creates.
const (
	managedByLabel = "app.kubernetes.io/managed-by"
	managedBy      = "kube-oidc-issuer"
	componentLabel = "app.kubernetes.io/component"
	component      = "key-lifecycle"
)

// maxAttempts bounds compare-and-swap retries. Conflicts come from other replicas and concurrent
// requests writing the same Secret; each retry re-reads, so a handful always suffices unless
// something writes the Secret in a tight loop.
const maxAttempts = 16

// Store reads and writes the state document in one Secret, with compare-and-swap on the Secret's
// resourceVersion.
type Store struct {
	secrets   corev1client.SecretsGetter
	namespace string
	name      string
}

// NewStore returns a store for the Secret namespace/name.
func NewStore(secrets corev1client.SecretsGetter, namespace, name string) *Store {
	return &Store{secrets: secrets, namespace: namespace, name: name}
}

// Ref is NAMESPACE/NAME of the state Secret.
func (s *Store) Ref() string { return s.namespace + "/" + s.name }

// Read returns the current state (the empty state if the Secret does not exist yet).
func (s *Store) Read(ctx context.Context) (*State, error) {
	st, _, err := s.read(ctx)
	return st, err
}

// read returns the state and the Secret it came from (nil when there is none yet).
func (s *Store) read(ctx context.Context) (*State, *corev1.Secret, error) {
	sec, err := s.secrets.Secrets(s.namespace).Get(ctx, s.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return &State{}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading state Secret %s: %w", s.Ref(), err)
	}
	st, err := ParseDocument(sec.Data[DataKey])
	if err != nil {
		// Never overwrite a state that cannot be read: it may hold keys that still need publishing.
		return nil, nil, fmt.Errorf("state Secret %s entry %s: %w (fix or delete the entry; the issuer will not overwrite it)", s.Ref(), DataKey, err)
	}
	return st, sec, nil
}

// Update applies mutate to the current state and writes the result with compare-and-swap on the
// Secret's resourceVersion, creating the Secret if needed. On a conflict it re-reads and calls
// mutate again, so mutate must derive everything from the state it is given (and whatever it reads
// fresh itself). An error from mutate aborts without writing and is returned as it is. Nothing is
// written when mutate leaves the document unchanged. It returns the state as written.
func (s *Store) Update(ctx context.Context, mutate func(*State) error) (*State, error) {
	var lastConflict error
	for attempt := range maxAttempts {
		if attempt > 0 {
			if err := sleep(ctx, backoff(attempt)); err != nil {
				return nil, fmt.Errorf("updating state Secret %s: %w (after conflict: %v)", s.Ref(), err, lastConflict)
			}
		}
		cur, sec, err := s.read(ctx)
		if err != nil {
			return nil, err
		}
		before, err := MarshalDocument(cur)
		if err != nil {
			return nil, err
		}
		next := cur.Clone()
		if err := mutate(next); err != nil {
			return nil, err
		}
		after, err := MarshalDocument(next)
		if err != nil {
			return nil, err
		}
		if bytes.Equal(before, after) {
			return next, nil
		}
		if next.Signer {
			next.nextSignerGeneration(cur, time.Now())
			if after, err = MarshalDocument(next); err != nil {
				return nil, err
			}
		}
		err = s.write(ctx, sec, after)
		if err == nil {
			return next, nil
		}
		if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("writing state Secret %s: %w", s.Ref(), err)
		}
		lastConflict = err
	}
	return nil, fmt.Errorf("writing state Secret %s: still conflicting after %d attempts: %w", s.Ref(), maxAttempts, lastConflict)
}

// write creates the Secret (sec == nil) or updates it with sec's resourceVersion as precondition.
func (s *Store) write(ctx context.Context, sec *corev1.Secret, doc []byte) error {
	client := s.secrets.Secrets(s.namespace)
	if sec == nil {
		_, err := client.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name:      s.name,
				Namespace: s.namespace,
				Labels:    map[string]string{managedByLabel: managedBy, componentLabel: component},
			},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{DataKey: doc},
		}, metav1.CreateOptions{})
		return err
	}
	next := sec.DeepCopy()
	if next.Data == nil {
		next.Data = map[string][]byte{}
	}
	next.Data[DataKey] = doc
	// Update sends metadata.resourceVersion: the API server rejects it with 409 Conflict if the
	// Secret changed since it was read.
	_, err := client.Update(ctx, next, metav1.UpdateOptions{})
	return err
}

// updateSecret is a compare-and-swap on any Secret: mutate changes a copy and reports whether it
// changed anything; a conflict re-reads and retries.
func updateSecret(ctx context.Context, client corev1client.SecretInterface, name string, mutate func(*corev1.Secret) (bool, error)) (*corev1.Secret, bool, error) {
	var lastConflict error
	for attempt := range maxAttempts {
		if attempt > 0 {
			if err := sleep(ctx, backoff(attempt)); err != nil {
				return nil, false, errors.Join(err, lastConflict)
			}
		}
		sec, err := client.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, false, err
		}
		next := sec.DeepCopy()
		changed, err := mutate(next)
		if err != nil || !changed {
			return sec, false, err
		}
		written, err := client.Update(ctx, next, metav1.UpdateOptions{})
		if err == nil {
			return written, true, nil
		}
		if !apierrors.IsConflict(err) {
			return nil, false, err
		}
		lastConflict = err
	}
	return nil, false, fmt.Errorf("still conflicting after %d attempts: %w", maxAttempts, lastConflict)
}

// backoff is 10 ms doubling per attempt up to 1 s, with full jitter so that replicas that
// conflicted once do not collide again in step.
func backoff(attempt int) time.Duration {
	d := 10 * time.Millisecond << min(attempt, 7)
	d = min(d, time.Second)
	return time.Duration(rand.Int64N(int64(d))) + time.Millisecond
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// AdoptResult says what Adopt did.
type AdoptResult string

const (
	// AdoptCreated: there was no state; the Secret now holds the local copy.
	AdoptCreated AdoptResult = "created"
	// AdoptReplaced: the Secret held an older generation of the same state (restored from an
	// old backup, say); it now holds the local copy.
	AdoptReplaced AdoptResult = "replaced"
	// AdoptKept: the Secret's state is as new as the local copy or newer; it is returned.
	AdoptKept AdoptResult = "kept"
)

// ErrForeignState is a signer-mode state of another lineage (another ID) than the local copy, or
// a state of the other mode: neither may replace the other.
var ErrForeignState = errors.New("foreign state")

// Adopt reconciles a signer's local copy of a signer-mode state with the state Secret, by
// compare-and-swap: the higher generation wins, so no write is lost whichever side is behind.
// The local copy is written as it is (its generation unchanged) when the Secret is missing or
// empty, or holds an older generation of the same state; otherwise the Secret's state is
// returned for the caller to adopt. A Secret that does not parse is never overwritten (it may hold
// keys nobody else has), and a state of another lineage or mode is refused with ErrForeignState.
func (s *Store) Adopt(ctx context.Context, local *State) (*State, AdoptResult, error) {
	if !local.Signer {
		return nil, "", fmt.Errorf("adopting into state Secret %s: the local state is not a signer-mode state", s.Ref())
	}
	doc, err := MarshalDocument(local)
	if err != nil {
		return nil, "", err
	}
	var lastConflict error
	for attempt := range maxAttempts {
		if attempt > 0 {
			if err := sleep(ctx, backoff(attempt)); err != nil {
				return nil, "", fmt.Errorf("adopting into state Secret %s: %w (after conflict: %v)", s.Ref(), err, lastConflict)
			}
		}
		cur, sec, err := s.read(ctx)
		if err != nil {
			return nil, "", err
		}
		result := AdoptReplaced
		switch {
		case sec == nil || cur.empty():
			result = AdoptCreated
		case !cur.Signer:
			return nil, "", fmt.Errorf("%w: state Secret %s holds a Secret-mode state (it follows signing-key Secret %q); a signer's state needs a state Secret of its own", ErrForeignState, s.Ref(), cur.SigningSecret)
		case cur.ID != local.ID:
			return nil, "", fmt.Errorf("%w: state Secret %s holds state %s, the local copy is state %s (another cluster's, or from an earlier signer init): refusing to replace either; point --state-cache at this cluster's cache, or delete the wrong one after checking which keys kube-apiserver verifies with", ErrForeignState, s.Ref(), cur.ID, local.ID)
		case cur.Generation >= local.Generation:
			return cur, AdoptKept, nil
		}
		err = s.write(ctx, sec, doc)
		if err == nil {
			return local.Clone(), result, nil
		}
		if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
			return nil, "", fmt.Errorf("writing state Secret %s: %w", s.Ref(), err)
		}
		lastConflict = err
	}
	return nil, "", fmt.Errorf("writing state Secret %s: still conflicting after %d attempts: %w", s.Ref(), maxAttempts, lastConflict)
}
