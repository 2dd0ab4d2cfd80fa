package lifecycle

import (
	"testing"
	"time"
)

// TestReconcileBackoff: after failed reconciles the leader retries in 2s, 4s, … up to resync.
func TestReconcileBackoff(t *testing.T) {
	b := reconcileBackoff()
	for i, want := range []time.Duration{2, 4, 8, 16, 32, 60, 60, 60} {
		if d := b.Step(); d != want*time.Second {
			t.Errorf("retry %d after %s, want %s", i+1, d, want*time.Second)
		}
	}
}
