package kubesource

import (
	"crypto/elliptic"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// newTestWatch is a SecretWatcher run without an informer, caching the length of an entry.
func newTestWatch() *secretRun[int] {
	w := &SecretWatcher[int]{
		Namespace: "ns",
		Name:      "thing",
		Kind:      "thing Secret",
		Parse:     func(s *corev1.Secret) int { return len(s.Data["x"]) },
	}
	r := w.newRun()
	r.store = cache.NewStore(cache.DeletionHandlingMetaNamespaceKeyFunc)
	return r
}

func TestSecretWatcherRefusesEmptyName(t *testing.T) {
	t.Parallel()
	for _, w := range []*SecretWatcher[int]{{Namespace: "ns", Kind: "thing"}, {Name: "n", Kind: "thing"}} {
		err := w.Run(t.Context(), func(SecretSnapshot[int]) { t.Error("called") })
		if err == nil || !strings.Contains(err.Error(), "thing source needs a namespace and a name") {
			t.Errorf("Run of %q/%q = %v; want a configuration error", w.Namespace, w.Name, err)
		}
	}
}

func TestSecretWatcherSnapshot(t *testing.T) {
	t.Parallel()
	r := newTestWatch()
	expect := func(step string, want SecretSnapshot[int], errContains string) {
		t.Helper()
		got, ok := r.snapshot()
		switch {
		case !ok:
			t.Fatalf("%s: nothing delivered", step)
		case errContains == "" && got != want:
			t.Fatalf("%s: got %+v; want %+v", step, got, want)
		case errContains != "" && (got.Err == nil || !strings.Contains(got.Err.Error(), errContains) || got.Exists):
			t.Fatalf("%s: got %+v; want an error containing %q", step, got, errContains)
		}
	}

	if s, ok := r.snapshot(); ok {
		t.Fatalf("before sync: delivered %+v", s)
	}
	// A read error is delivered even before the sync, in the default wording.
	r.watchError(t.Context(), errors.New("connection refused"))
	expect("read error", SecretSnapshot[int]{}, "reading thing Secret ns/thing: connection refused")
	r.setReadErr(nil)
	if s, ok := r.snapshot(); ok {
		t.Fatalf("cleared before sync: delivered %+v", s)
	}

	r.synced = true
	expect("missing", SecretSnapshot[int]{}, "")
	obj, err := r.transform(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "thing", Annotations: map[string]string{"a": "b"}},
		Data:       map[string][]byte{"x": []byte("four")},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := obj.(*cached[int])
	if len(c.Annotations) != 0 || c.value != 4 {
		t.Fatalf("transform kept %+v", c)
	}
	if again, _ := r.transform(c); again != c {
		t.Fatal("transform is not idempotent")
	}
	if err := r.store.Add(obj); err != nil {
		t.Fatal(err)
	}
	expect("present", SecretSnapshot[int]{Exists: true, Value: 4}, "")

	if err := r.store.Update(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "thing"}}); err != nil {
		t.Fatal(err)
	}
	expect("not transformed", SecretSnapshot[int]{}, "thing Secret ns/thing: unexpected object *v1.Secret")
}

func TestChanges(t *testing.T) {
	t.Parallel()
	k := newECKey(t, elliptic.P256())
	pub, err := keys.ParsePEM("test", k.pub)
	if err != nil {
		t.Fatal(err)
	}
	var c Changes
	for i, step := range []struct {
		o    keys.Observation
		want bool
	}{
		{keys.Observation{AllowEmpty: true}, true}, // the first observation, even without keys
		{keys.Observation{AllowEmpty: true}, false},
		{keys.Observation{Keys: []keys.Key{{Public: pub[0], Phase: keys.PhaseActive}}}, true},
		{keys.Observation{Keys: []keys.Key{{Public: pub[0], Phase: keys.PhaseActive}}}, false},
		{keys.Observation{Keys: []keys.Key{{Public: pub[0], Phase: keys.PhasePublished}}}, true},
		{keys.Observation{Err: errors.New("a")}, true},
		{keys.Observation{Err: errors.New("a")}, false},
		{keys.Observation{Err: errors.New("b")}, true},
	} {
		if got := c.Changed(step.o); got != step.want {
			t.Errorf("step %d: Changed = %v; want %v", i, got, step.want)
		}
	}
}
