package fleet

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage/storagetest"
)

func renderFor(t *testing.T, url string) *documents.Set {
	t.Helper()
	k := newSigningKey(t, false)
	pubs, err := keys.ParsePEM("test", k.pub)
	if err != nil {
		t.Fatal(err)
	}
	set, err := documents.Render(documents.Config{IssuerURL: url, MaxAge: documents.DefaultMaxAge}, keys.NewSet(keys.Key{Public: pubs[0], Phase: keys.PhaseActive}), 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// TestMirrors: one worker pool mirrors every cluster; a failing cluster's sink holds up no other,
// nothing is written while not running (not the leader), removal deletes discovery then JWKS, and
// drift is repaired on the interval.
func TestMirrors(t *testing.T) {
	const a, b = "https://oidc.fleet.test/clusters/a", "https://oidc.fleet.test/clusters/b"
	var mu sync.Mutex
	mems := map[string]*storagetest.Memory{a: storagetest.NewMemory(), b: storagetest.NewMemory()}
	m, err := NewMirrors(MirrorConfig{Interval: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(tWriter{t}, nil)), Sinks: func(url string) ([]storage.Sink, error) {
		mu.Lock()
		defer mu.Unlock()
		if url == b {
			return []storage.Sink{&storagetest.Faulty{Sink: mems[b], FailPut: func(storage.Object) error { return errors.New("access denied") }}}, nil
		}
		return []storage.Sink{mems[url]}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	pa, err := m.ForCluster(ClusterRef{"ns", "a"}, a)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := m.ForCluster(ClusterRef{"ns", "b"}, b)
	if err != nil {
		t.Fatal(err)
	}
	setA := renderFor(t, a)
	pa[0].Publish(setA)
	pb[0].Publish(renderFor(t, b))
	time.Sleep(100 * time.Millisecond)
	if len(mems[a].Puts()) != 0 {
		t.Fatal("written while not running")
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	jwksKey, discoveryKey := storage.Key(documents.JWKSPath), storage.Key(documents.DiscoveryPath)
	waitUntil(t, "a mirrored", func() bool {
		o, ok := mems[a].Get(jwksKey)
		return ok && string(o.Body) == string(setA.JWKS.Body)
	})
	waitUntil(t, "b failing", func() bool { return m.Status().Failing == 1 })
	if st := m.Status(); st.Errors[b] == "" {
		t.Errorf("status %+v lacks b's error", st)
	}

	// Drift: an object deleted behind the mirror's back comes back.
	if err := mems[a].Delete(ctx, discoveryKey); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a's discovery repaired", func() bool { _, ok := mems[a].Get(discoveryKey); return ok })

	m.Removed(ClusterRef{"ns", "a"}, a)
	waitUntil(t, "a's objects removed", func() bool {
		_, j := mems[a].Get(jwksKey)
		_, d := mems[a].Get(discoveryKey)
		return !j && !d
	})
	dels := mems[a].Deletes()
	if len(dels) < 3 || dels[len(dels)-2] != discoveryKey || dels[len(dels)-1] != jwksKey {
		t.Errorf("deletes %v, want discovery then JWKS last", dels)
	}
	if st := m.Status(); st.Clusters != 1 {
		t.Errorf("status %+v, want one cluster left", st)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tWriter sends log output to the test log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
