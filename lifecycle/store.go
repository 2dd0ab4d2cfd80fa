package lifecycle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
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
	// labels are added to the issuer's own labels on a Secret the Store creates.
	labels map[string]string
}

// NewStore returns a store for the Secret namespace/name.
func NewStore(secrets corev1client.SecretsGetter, namespace, name string) *Store {
	return &Store{secrets: secrets, namespace: namespace, name: name}
}

// WithLabels returns the store with labels added to those of a Secret it creates (a fleet labels
// a cluster's state Secret with the cluster, so that its shared watch sees it).
func (s *Store) WithLabels(labels map[string]string) *Store {
	c := *s
	c.labels = maps.Clone(labels)
	return &c
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
	var out *State
	err := retryConflicts(ctx, "updating state Secret "+s.Ref(), func() (bool, error) {
		cur, sec, err := s.read(ctx)
		if err != nil {
			return false, err
		}
		before, err := MarshalDocument(cur)
		if err != nil {
			return false, err
		}
		next := cur.Clone()
		if err := mutate(next); err != nil {
			return false, err
		}
		after, err := MarshalDocument(next)
		if err != nil {
			return false, err
		}
		if bytes.Equal(before, after) {
			out = next
			return false, nil
		}
		if next.Signer {
			next.nextSignerGeneration(cur, time.Now())
			if after, err = MarshalDocument(next); err != nil {
				return false, err
			}
		}
		err = s.write(ctx, sec, after)
		if err == nil {
			out = next
			return false, nil
		}
		if conflictOrExists(err) {
			return true, err
		}
		return false, fmt.Errorf("writing state Secret %s: %w", s.Ref(), err)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Store) createLabels() map[string]string {
	l := map[string]string{managedByLabel: managedBy, componentLabel: component}
	for k, v := range s.labels {
		if _, own := l[k]; !own {
			l[k] = v
		}
	}
	return l
}

// write creates the Secret (sec == nil) or updates it with sec's resourceVersion as precondition.
func (s *Store) write(ctx context.Context, sec *corev1.Secret, doc []byte) error {
	client := s.secrets.Secrets(s.namespace)
	if sec == nil {
		_, err := client.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name:      s.name,
				Namespace: s.namespace,
				Labels:    s.createLabels(),
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
	var (
		out     *corev1.Secret
		changed bool
	)
	err := retryConflicts(ctx, "", func() (bool, error) {
		sec, err := client.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		next := sec.DeepCopy()
		changed, err = mutate(next)
		if err != nil {
			return false, err
		}
		if !changed {
			out = sec
			return false, nil
		}
		out, err = client.Update(ctx, next, metav1.UpdateOptions{})
		return apierrors.IsConflict(err), err
	})
	if err != nil {
		return nil, false, err
	}
	return out, changed, nil
}

// conflictOrExists is what a compare-and-swap on the state Secret retries: a 409 Conflict on
// update, or AlreadyExists when another writer created the Secret first.
func conflictOrExists(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
}

// conflictBackoff is the wait between compare-and-swap attempts: ceilings of 20ms doubling to 1s,
// jittered so that replicas that conflicted once do not collide again in step. wait.Backoff's
// jitter only adds (a step lies in [Duration, Duration×(1+Jitter))), so Duration and Cap are half
// the ceilings with Jitter 1: each wait lies in [ceiling/2, ceiling). Steps is unbounded in
// practice, so only Cap ends the doubling; retryConflicts counts the attempts.
func conflictBackoff() wait.Backoff {
	return wait.Backoff{Duration: 10 * time.Millisecond, Factor: 2, Jitter: 1, Cap: 500 * time.Millisecond, Steps: math.MaxInt32}
}

// retryConflicts is a compare-and-swap loop: it calls attempt, which must re-read what it writes,
// until attempt reports no conflict, at most maxAttempts times, waiting a step of conflictBackoff
// in between. attempt reports a conflict by returning true with the write's error; only those are
// retried, so an error from reading or from a caller's mutate is never mistaken for a lost race.
// attempt's other errors are returned as they are; the errors retryConflicts makes itself say what
// was being done (doing, when not empty) and keep the last conflict. It is client-go's
// retry.OnError with two differences that matter here: a wait.Backoff with a Cap ends
// retry.OnError as soon as the cap is reached (after 7 attempts, not 16), and retry.OnError's
// waits do not end with ctx.
func retryConflicts(ctx context.Context, doing string, attempt func() (conflict bool, err error)) error {
	prefix := ""
	if doing != "" {
		prefix = doing + ": "
	}
	backoff := conflictBackoff()
	var lastConflict error
	for i := range maxAttempts {
		if i > 0 {
			t := time.NewTimer(backoff.Step())
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("%s%w (after conflict: %w)", prefix, context.Cause(ctx), lastConflict)
			case <-t.C:
			}
		}
		conflict, err := attempt()
		if !conflict {
			return err
		}
		lastConflict = err
	}
	return fmt.Errorf("%sstill conflicting after %d attempts: %w", prefix, maxAttempts, lastConflict)
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
	var (
		out    *State
		result AdoptResult
	)
	err = retryConflicts(ctx, "adopting into state Secret "+s.Ref(), func() (bool, error) {
		cur, sec, err := s.read(ctx)
		if err != nil {
			return false, err
		}
		result = AdoptReplaced
		switch {
		case sec == nil || cur.empty():
			result = AdoptCreated
		case !cur.Signer:
			return false, fmt.Errorf("%w: state Secret %s holds a Secret-mode state (it follows signing-key Secret %q); a signer's state needs a state Secret of its own", ErrForeignState, s.Ref(), cur.SigningSecret)
		case cur.ID != local.ID:
			return false, fmt.Errorf("%w: state Secret %s holds state %s, the local copy is state %s (another cluster's, or from an earlier signer init): refusing to replace either; point --state-cache at this cluster's cache, or delete the wrong one after checking which keys kube-apiserver verifies with", ErrForeignState, s.Ref(), cur.ID, local.ID)
		case cur.Generation >= local.Generation:
			out, result = cur, AdoptKept
			return false, nil
		}
		err = s.write(ctx, sec, doc)
		if err == nil {
			out = local.Clone()
			return false, nil
		}
		if conflictOrExists(err) {
			return true, err
		}
		return false, fmt.Errorf("writing state Secret %s: %w", s.Ref(), err)
	})
	if err != nil {
		return nil, "", err
	}
	return out, result, nil
}
