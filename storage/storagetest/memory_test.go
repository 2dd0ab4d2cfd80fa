package storagetest

import "testing"

// TestMemoryConformance: the in-memory sink other tests rely on behaves like a real one.
func TestMemoryConformance(t *testing.T) {
	Run(t, func(*testing.T) Harness { return NewMemory().Harness() })
}
