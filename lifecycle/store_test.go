package lifecycle

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// TestConflictBackoff: the waits between compare-and-swap attempts lie in [c/2, c) for ceilings
// c of 20ms doubling to 1s, as many times as there are retries.
func TestConflictBackoff(t *testing.T) {
	b := conflictBackoff()
	ceiling := 20 * time.Millisecond
	for i := 1; i < maxAttempts; i++ {
		d := b.Step()
		if d < ceiling/2 || d >= ceiling {
			t.Errorf("wait before attempt %d: %s, want in [%s, %s)", i+1, d, ceiling/2, ceiling)
		}
		ceiling = min(2*ceiling, time.Second)
	}
}

// TestRetryConflicts: reported conflicts are retried, other errors returned as they are; when ctx
// ends during a wait the error names what was being done and keeps both causes.
func TestRetryConflicts(t *testing.T) {
	conflict := apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, "s", errors.New("changed"))
	calls := 0
	err := retryConflicts(t.Context(), "updating x", func() (bool, error) {
		calls++
		if calls < 3 {
			return true, conflict
		}
		return false, nil
	})
	if err != nil || calls != 3 {
		t.Errorf("got %v after %d calls, want nil after 3", err, calls)
	}

	// A conflict the attempt does not report as one (from a read, say) is not retried.
	calls = 0
	err = retryConflicts(t.Context(), "updating x", func() (bool, error) {
		calls++
		return false, conflict
	})
	if !errors.Is(err, conflict) || calls != 1 {
		t.Errorf("got %v after %d calls, want %v after 1", err, calls, conflict)
	}

	ctx, cancel := context.WithCancel(t.Context())
	err = retryConflicts(ctx, "updating x", func() (bool, error) {
		cancel()
		return true, conflict
	})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, conflict) || !strings.HasPrefix(err.Error(), "updating x: ") {
		t.Errorf("got %v, want the cancellation and the conflict, prefixed with what was being done", err)
	}
}
