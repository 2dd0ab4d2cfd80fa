package signerstate

import (
	"context"
	"crypto/elliptic"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
)

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func startCluster(t *testing.T) corev1client.CoreV1Interface {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real kube-apiserver (run without -short)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bin, err := testcluster.BinDir(ctx, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	signing, _, err := pki.GenerateECDSAKeyPEM(elliptic.P256())
	if err != nil {
		t.Fatal(err)
	}
	c, err := testcluster.Start(ctx, testcluster.Config{BinDir: bin, WorkDir: t.TempDir(),
		ServiceAccountIssuers: []string{"https://issuer.example"}, SigningKeyPEM: signing})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping the cluster: %v", err)
		}
	})
	client, err := corev1client.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-oidc-issuer"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return client
}

// eventually polls cond every 20 ms for up to 30 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKeysFollowTheStateSecret runs Keys against a real kube-apiserver: it signs from its cache
// before the API server has answered, creates the state Secret from the cache, follows a promote
// made through the lifecycle Manager (writing each accepted state to the cache), keeps the last
// good state when the Secret is corrupted, pushes its newer state back over an older one, and
// refuses a foreign state.
func TestKeysFollowTheStateSecret(t *testing.T) {
	client := startCluster(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ref := lifecycle.Ref{Namespace: "kube-oidc-issuer", Name: "signer-state"}
	cache := filepath.Join(t.TempDir(), "state.json")
	initial := newState(t)
	if err := WriteCache(cache, initial); err != nil {
		t.Fatal(err)
	}
	k1, _ := initial.Active()

	keys, err := New(Config{Secrets: client, StateSecret: ref, CachePath: cache, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := keys.Snapshot(ctx)
	if err != nil || snap.Active.KeyID() != k1.KID {
		t.Fatalf("from the cache, before the watch: active %s, %v; want %s", snap.Active.KeyID(), err, k1.KID)
	}
	done := make(chan error, 1)
	go func() { done <- keys.Run(ctx) }()
	defer func() { cancel(); <-done }()

	store := lifecycle.NewStore(client, ref.Namespace, ref.Name)
	eventually(t, "the state Secret created from the cache", func() bool {
		st, err := store.Read(ctx)
		return err == nil && st.ID == initial.ID
	})

	m, err := lifecycle.NewManager(lifecycle.Config{Secrets: client, StateSecret: ref, Signer: true, SignerRefresh: 10 * time.Second,
		MaxTokenLifetime: time.Hour, PublishLead: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	k2, err := m.Stage(ctx, lifecycle.AlgorithmRS256)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the staged key published", func() bool { s, _ := keys.Snapshot(ctx); return len(s.Published) == 2 })
	if s, _ := keys.Snapshot(ctx); s.Active.KeyID() != k1.KID {
		t.Fatalf("staging switched the signing key to %s", s.Active.KeyID())
	}
	begin := time.Now()
	if _, err := m.Promote(ctx, k2.KID, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the promoted key signing", func() bool { s, _ := keys.Snapshot(ctx); return s.Active.KeyID() == k2.KID })
	t.Logf("promote → signing with the new key: %s", time.Since(begin).Round(time.Millisecond))
	cached, err := ReadCache(cache)
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := cached.Active(); a.KID != k2.KID {
		t.Fatalf("cache active %s after the promote, want %s", a.KID, k2.KID)
	}
	good := keys.Status().Generation

	// A hand-edited, invalid state Secret: the last good state stays, loudly.
	sec, err := client.Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data[lifecycle.DataKey] = []byte(`{"version":1,"signer":true,"keys":[]}`)
	if sec, err = client.Secrets(ref.Namespace).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the corrupt Secret reported", func() bool { return keys.Status().LastError != "" })
	if s, _ := keys.Snapshot(ctx); s.Active.KeyID() != k2.KID || keys.Status().Generation != good {
		t.Fatalf("after a corrupt Secret: active %s generation %d", s.Active.KeyID(), keys.Status().Generation)
	}
	if st, err := ReadCache(cache); err != nil || st.Generation != good {
		t.Fatalf("the cache changed after a corrupt Secret: %v", err)
	}

	// An older generation of the same state (an etcd backup restored): ours is written back.
	older, err := lifecycle.MarshalDocument(initial)
	if err != nil {
		t.Fatal(err)
	}
	sec.Data[lifecycle.DataKey] = older
	if _, err = client.Secrets(ref.Namespace).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the newer state written back", func() bool {
		st, err := store.Read(ctx)
		return err == nil && st.Generation == good
	})

	// A foreign state: refused, nothing changes.
	foreign := newState(t)
	foreign.Generation = good + 100
	doc, _ := lifecycle.MarshalDocument(foreign)
	sec, _ = client.Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	sec.Data[lifecycle.DataKey] = doc
	if _, err = client.Secrets(ref.Namespace).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the foreign state refused", func() bool { return !keys.Status().SecretSynced })
	if s, _ := keys.Snapshot(ctx); s.Active.KeyID() != k2.KID {
		t.Fatalf("after a foreign state: active %s", s.Active.KeyID())
	}
	if st, _ := ReadCache(cache); st.ID != initial.ID {
		t.Fatal("the foreign state reached the cache")
	}
}
