package storagetest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage"
)

// Memory is an in-memory storage.Sink that stores headers like S3 does. It passes the
// conformance suite, so tests of the code driving sinks can rely on it.
type Memory struct {
	mu      sync.Mutex
	objects map[string]storage.Object
	puts    []string
	deletes []string
}

var _ storage.Sink = (*Memory)(nil)

// NewMemory returns an empty in-memory sink.
func NewMemory() *Memory { return &Memory{objects: map[string]storage.Object{}} }

// String names the sink.
func (m *Memory) String() string { return "memory://" }

// Location names a key.
func (m *Memory) Location(key string) string { return "memory:///" + key }

// Stat describes a stored object.
func (m *Memory) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return storage.ObjectInfo{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objects[key]
	if !ok {
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, storage.ErrNotFound)
	}
	return storage.ObjectInfo{SHA256: o.SHA256, Headers: true, ContentType: o.ContentType, CacheControl: o.CacheControl}, nil
}

// Put stores a copy of o.
func (m *Memory) Put(ctx context.Context, o storage.Object) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", o.Key, err)
	}
	o.Body = slices.Clone(o.Body)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objects[o.Key] = o
	m.puts = append(m.puts, o.Key)
	return nil
}

// Delete removes the object at key, if any.
func (m *Memory) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objects, key)
	m.deletes = append(m.deletes, key)
	return nil
}

// Harness returns the conformance harness for m.
func (m *Memory) Harness() Harness {
	return Harness{
		Sink: m,
		Fetch: func(_ context.Context, key string) (Fetched, error) {
			o, ok := m.Get(key)
			if !ok {
				return Fetched{}, nil
			}
			return Fetched{Found: true, Body: o.Body, Headers: true, ContentType: o.ContentType, CacheControl: o.CacheControl}, nil
		},
		Remove: func(_ context.Context, key string) error {
			m.mu.Lock()
			defer m.mu.Unlock()
			delete(m.objects, key)
			return nil
		},
	}
}

// Get returns a copy of the object at key.
func (m *Memory) Get(key string) (storage.Object, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objects[key]
	o.Body = slices.Clone(o.Body)
	return o, ok
}

// Puts returns the keys stored so far, in order.
func (m *Memory) Puts() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.puts)
}

// Deletes returns the keys Delete was called for so far (whether or not they held an object), in
// order.
func (m *Memory) Deletes() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.deletes)
}

// Faulty wraps a sink and fails or delays the calls a test chooses.
type Faulty struct {
	storage.Sink
	// FailPut, when it returns an error for an object, makes Put return that error without
	// storing it.
	FailPut func(storage.Object) error
	// FailStat does the same for Stat.
	FailStat func(key string) error
	// FailDelete does the same for Delete: the object stays.
	FailDelete func(key string) error
}

// Put stores o unless FailPut refuses it.
func (f *Faulty) Put(ctx context.Context, o storage.Object) error {
	if f.FailPut != nil {
		if err := f.FailPut(o); err != nil {
			return err
		}
	}
	return f.Sink.Put(ctx, o)
}

// Stat describes key unless FailStat refuses it.
func (f *Faulty) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if f.FailStat != nil {
		if err := f.FailStat(key); err != nil {
			return storage.ObjectInfo{}, err
		}
	}
	return f.Sink.Stat(ctx, key)
}

// Delete removes key unless FailDelete refuses it.
func (f *Faulty) Delete(ctx context.Context, key string) error {
	if f.FailDelete != nil {
		if err := f.FailDelete(key); err != nil {
			return err
		}
	}
	return f.Sink.Delete(ctx, key)
}
