package kubesource

import (
	"context"
	"crypto/elliptic"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// testRun is a Run call without an informer: the test fills the watcher's store and drives its
// sync and read errors, and observe does what each wake-up of Run does.
type testRun struct {
	*run
	*secretRun[parsed]
}

func newTestRun() *testRun {
	s := New(nil, "kube-system", "cluster-sa", slog.New(slog.DiscardHandler))
	w := s.watcher().newRun()
	w.store = cache.NewStore(cache.DeletionHandlingMetaNamespaceKeyFunc)
	return &testRun{run: &run{Source: s}, secretRun: w}
}

func (r *testRun) observe() (keys.Observation, bool) {
	snap, ok := r.snapshot()
	if !ok {
		return keys.Observation{}, false
	}
	return r.run.observe(snap)
}

func TestName(t *testing.T) {
	t.Parallel()
	if got := New(nil, "eksa-system", "prod-sa", nil).Name(); got != "secret/eksa-system/prod-sa" {
		t.Errorf("Name() = %q", got)
	}
}

func TestRunRefusesEmptyName(t *testing.T) {
	t.Parallel()
	for _, s := range []*Source{New(nil, "ns", "", nil), New(nil, "", "name", nil)} {
		if err := s.Run(t.Context(), func(keys.Observation) { t.Error("reported") }); err == nil {
			t.Errorf("Run of %s succeeded; want an error", s.Name())
		}
	}
}

// TestObserve walks the state machine Run drives: nothing before the first sync, not found,
// keys, a rejected Secret, deletion, read errors, and no repeated reports.
func TestObserve(t *testing.T) {
	t.Parallel()
	k := newECKey(t, elliptic.P256())
	r := newTestRun()

	expectNothing := func(step string) {
		t.Helper()
		if o, ok := r.observe(); ok {
			t.Fatalf("%s: reported %v / %v; want nothing", step, o.Keys, o.Err)
		}
	}
	expectErr := func(step, contains string) {
		t.Helper()
		o, ok := r.observe()
		if !ok || o.Err == nil || !strings.Contains(o.Err.Error(), contains) {
			t.Fatalf("%s: got reported=%v keys=%v err=%v; want an error containing %q", step, ok, o.Keys, o.Err, contains)
		}
	}
	expectKeys := func(step string, n int) {
		t.Helper()
		o, ok := r.observe()
		if !ok || o.Err != nil || len(o.Keys) != n {
			t.Fatalf("%s: got reported=%v keys=%v err=%v; want %d keys", step, ok, o.Keys, o.Err, n)
		}
	}
	add := func(data map[string][]byte) {
		t.Helper()
		obj, _ := transform(secret(data))
		if err := r.store.Update(obj); err != nil {
			t.Fatal(err)
		}
	}

	expectNothing("before sync")
	r.synced = true
	expectErr("synced, no secret", "secret kube-system/cluster-sa not found")
	expectNothing("still no secret")

	add(map[string][]byte{"tls.crt": k.pub, "tls.key": k.priv})
	expectKeys("created", 1)
	expectNothing("unchanged")
	add(map[string][]byte{"tls.crt": k.cert, "tls.key": k.priv}) // same key, other encoding
	expectNothing("same keys")

	add(map[string][]byte{"tls.key": []byte("nonsense")})
	expectErr("garbage", "tls.key")
	add(map[string][]byte{"tls.crt": k.pub, "tls.key": k.priv})
	expectKeys("fixed", 1)

	r.watchError(t.Context(), apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "cluster-sa", errors.New("RBAC says no")))
	expectErr("forbidden", "grant the issuer's service account get, list and watch on secrets with resourceNames [cluster-sa] in namespace kube-system")
	r.setReadErr(nil)
	expectKeys("watch restarted", 1)

	if err := r.store.Delete(&parsedSecret{ObjectMeta: metaFor("kube-system", "cluster-sa")}); err != nil {
		t.Fatal(err)
	}
	expectErr("deleted", "not found: it was deleted")
}

func TestWatchErrorClassification(t *testing.T) {
	t.Parallel()
	gr := schema.GroupResource{Resource: "secrets"}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	for _, tc := range []struct {
		name     string
		ctx      context.Context
		err      error
		contains string // "" when the error must be ignored
	}{
		{"expired", t.Context(), apierrors.NewResourceExpired("too old"), ""},
		// What apierrors.NewGone (deprecated) built: 410 with reason Gone.
		{"gone", t.Context(), &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusGone, Reason: metav1.StatusReasonGone, Message: "gone"}}, ""},
		{"eof", t.Context(), io.EOF, ""},
		{"unexpected eof", t.Context(), io.ErrUnexpectedEOF, ""},
		{"stopping", canceled, errors.New("whatever"), ""},
		{"forbidden", t.Context(), apierrors.NewForbidden(gr, "cluster-sa", errors.New("no")), "is forbidden: grant"},
		{"unauthorized", t.Context(), apierrors.NewUnauthorized("bad token"), "does not accept the issuer's credentials"},
		{"other", t.Context(), errors.New("connection refused"), "reading secret kube-system/cluster-sa: connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newTestRun()
			r.watchError(tc.ctx, tc.err)
			r.mu.Lock()
			got := r.readErr
			r.mu.Unlock()
			switch {
			case tc.contains == "" && got != nil:
				t.Errorf("recorded %v; want it ignored", got)
			case tc.contains != "" && (got == nil || !strings.Contains(got.Error(), tc.contains)):
				t.Errorf("recorded %v; want an error containing %q", got, tc.contains)
			case tc.contains != "" && !errors.Is(got, tc.err):
				t.Errorf("recorded %v does not wrap %v", got, tc.err)
			}
		})
	}
}

func metaFor(namespace, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: namespace, Name: name}
}
