package kubesource_test

import (
	"context"
	"crypto/elliptic"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	rbacv1client "k8s.io/client-go/kubernetes/typed/rbac/v1"
	"k8s.io/client-go/rest"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys/kubesource"
)

const (
	testNamespace = "issuer-test"
	testSecret    = "cluster-sa"
	issuerSA      = "kube-oidc-issuer"
	// waitFor bounds every wait for an observation: generous for -race on a busy 2-core machine.
	waitFor = 30 * time.Second
)

type keyPEM struct {
	priv, pub []byte
	kid       string
}

func genRSA(t *testing.T) keyPEM {
	t.Helper()
	priv, pub, err := pki.GenerateRSAKeyPEM(2048)
	if err != nil {
		t.Fatal(err)
	}
	return withKID(t, priv, pub)
}

func genEC(t *testing.T) keyPEM {
	t.Helper()
	priv, pub, err := pki.GenerateECDSAKeyPEM(elliptic.P256())
	if err != nil {
		t.Fatal(err)
	}
	return withKID(t, priv, pub)
}

func withKID(t *testing.T, priv, pub []byte) keyPEM {
	t.Helper()
	ks, err := keys.ParsePEM("test key", pub)
	if err != nil || len(ks) != 1 {
		t.Fatalf("parsing generated key: %v", err)
	}
	return keyPEM{priv: priv, pub: pub, kid: ks[0].KeyID()}
}

type timedObservation struct {
	keys.Observation
	at time.Time
}

// runner runs a Source and collects its observations with their arrival time.
type runner struct {
	t      *testing.T
	obs    chan timedObservation
	cancel context.CancelFunc
	done   chan error
}

func runSource(t *testing.T, src *kubesource.Source) *runner {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	r := &runner{t: t, obs: make(chan timedObservation, 1000), cancel: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- src.Run(ctx, func(o keys.Observation) {
			r.obs <- timedObservation{Observation: o, at: time.Now()}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(waitFor):
			t.Error("Run did not return after cancel")
		}
	})
	return r
}

func (r *runner) next() timedObservation {
	r.t.Helper()
	select {
	case o := <-r.obs:
		return o
	case <-time.After(waitFor):
		r.t.Fatal("no observation reported")
		return timedObservation{}
	}
}

func (r *runner) expectKeys(want map[string]keys.Phase) timedObservation {
	r.t.Helper()
	o := r.next()
	if o.Err != nil {
		r.t.Fatalf("observation error %v; want keys %v", o.Err, want)
	}
	got := map[string]keys.Phase{}
	for _, k := range o.Keys {
		got[k.Public.KeyID()] = k.Phase
	}
	if !maps.Equal(got, want) {
		r.t.Fatalf("keys = %v; want %v", got, want)
	}
	return o
}

func (r *runner) expectError(contains ...string) error {
	r.t.Helper()
	o := r.next()
	if o.Err == nil {
		r.t.Fatalf("observation has %d keys; want an error containing %q", len(o.Keys), contains)
	}
	for _, c := range contains {
		if !strings.Contains(o.Err.Error(), c) {
			r.t.Errorf("error %q does not contain %q", o.Err, c)
		}
	}
	return o.Err
}

func (r *runner) expectQuiet(d time.Duration) {
	r.t.Helper()
	select {
	case o := <-r.obs:
		r.t.Fatalf("unexpected observation: keys %v, error %v", o.Keys, o.Err)
	case <-time.After(d):
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func capiSecret(name string, tlsCrt, tlsKey []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace, Name: name},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{"tls.crt": tlsCrt, "tls.key": tlsKey},
	}
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// issuerClient returns a client acting as the issuer's service account, which may only get, list
// and watch the Secrets in names: the informer works only if it is scoped to its one Secret.
func issuerClient(t *testing.T, admin *rest.Config, names ...string) corev1client.SecretsGetter {
	t.Helper()
	grant(t, admin, names...)
	cfg := rest.CopyConfig(admin)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + testNamespace + ":" + issuerSA}
	c, err := corev1client.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// grant lets the issuer's service account get, list and watch the Secrets in names.
func grant(t *testing.T, admin *rest.Config, names ...string) {
	t.Helper()
	ctx := t.Context()
	rbac, err := rbacv1client.NewForConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	name := "issuer-secrets-" + strings.Join(names, "-")
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace, Name: name},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"secrets"},
			Verbs: []string{"get", "list", "watch"}, ResourceNames: slices.Clone(names),
		}},
	}
	if _, err := rbac.Roles(testNamespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating role: %v", err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace, Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: testNamespace, Name: issuerSA}},
	}
	if _, err := rbac.RoleBindings(testNamespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating role binding: %v", err)
	}
}

func TestSourceAgainstAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver; skipped with -short")
	}
	cluster := startAPIServer(t)
	admin := cluster.RESTConfig()
	// Without this, client-go's default rate limit (5 QPS) delays the test's own updates.
	admin.QPS, admin.Burst = 1000, 1000
	ctx := t.Context()
	adminCore, err := corev1client.NewForConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adminCore.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	secrets := adminCore.Secrets(testNamespace)

	// The issuer may read only its own Secret: a namespace-wide list or watch would be forbidden.
	src := kubesource.New(issuerClient(t, admin, testSecret), testNamespace, testSecret, testLogger(t))
	if got, want := src.Name(), "secret/"+testNamespace+"/"+testSecret; got != want {
		t.Errorf("Name() = %q; want %q", got, want)
	}
	r := runSource(t, src)
	a, b, c := genRSA(t), genRSA(t), genEC(t)

	t.Run("missing at start", func(t *testing.T) {
		r.t = t
		r.expectError("secret " + testNamespace + "/" + testSecret + " not found")
	})

	t.Run("created after start", func(t *testing.T) {
		r.t = t
		if _, err := secrets.Create(ctx, capiSecret(testSecret, a.pub, a.priv), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		r.expectKeys(map[string]keys.Phase{a.kid: keys.PhaseActive})
	})

	t.Run("updated", func(t *testing.T) {
		r.t = t
		// Rotate through keys: each update must be reported; record how long that takes.
		var afterReturn, afterCall []time.Duration
		steps := []struct {
			crt, key []byte
			want     map[string]keys.Phase
		}{
			{cat(a.pub, b.pub), b.priv, map[string]keys.Phase{b.kid: keys.PhaseActive, a.kid: keys.PhasePublished}},
			{cat(b.pub, c.pub), c.priv, map[string]keys.Phase{c.kid: keys.PhaseActive, b.kid: keys.PhasePublished}},
			{cat(c.pub, a.pub), a.priv, map[string]keys.Phase{a.kid: keys.PhaseActive, c.kid: keys.PhasePublished}},
		}
		const rounds = 10
		for i := range rounds * len(steps) {
			step := steps[i%len(steps)]
			called := time.Now()
			if _, err := secrets.Update(ctx, capiSecret(testSecret, step.crt, step.key), metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			returned := time.Now()
			o := r.expectKeys(step.want)
			afterReturn = append(afterReturn, o.at.Sub(returned))
			afterCall = append(afterCall, o.at.Sub(called))
		}
		ms := func(d time.Duration) string { return strings.TrimSuffix(d.Round(10*time.Microsecond).String(), "0s") }
		stats := func(ds []time.Duration) string {
			s := slices.Sorted(slices.Values(ds))
			return "min " + ms(s[0]) + " median " + ms(s[len(s)/2]) + " p90 " + ms(s[len(s)*9/10]) + " max " + ms(s[len(s)-1])
		}
		t.Logf("update→report latency over %d updates, from Update() returning: %s", len(afterReturn), stats(afterReturn))
		t.Logf("update→report latency over %d updates, from Update() being called: %s", len(afterCall), stats(afterCall))
		// Metadata-only updates that leave the keys alone are not reported again.
		s, err := secrets.Get(ctx, testSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Labels = map[string]string{"touched": "yes"}
		if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		r.expectQuiet(time.Second)
	})

	t.Run("other secret in the namespace does not trigger a report", func(t *testing.T) {
		r.t = t
		other := capiSecret("other-sa", b.pub, b.priv)
		if _, err := secrets.Create(ctx, other, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		other.Data["tls.key"] = c.priv
		if _, err := secrets.Update(ctx, other, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := secrets.Delete(ctx, "other-sa", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		r.expectQuiet(2 * time.Second)
	})

	t.Run("replaced with garbage", func(t *testing.T) {
		r.t = t
		garbage := []byte("garbage that is long enough that quoting it would be noticed")
		if _, err := secrets.Update(ctx, capiSecret(testSecret, a.pub, garbage), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		err := r.expectError(testNamespace+"/"+testSecret, "tls.key", "no PEM block")
		if strings.Contains(err.Error(), "long enough") {
			t.Errorf("error quotes the secret: %v", err)
		}
		// Back to good keys.
		if _, err := secrets.Update(ctx, capiSecret(testSecret, a.pub, a.priv), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		r.expectKeys(map[string]keys.Phase{a.kid: keys.PhaseActive})
	})

	t.Run("deleted", func(t *testing.T) {
		r.t = t
		if err := secrets.Delete(ctx, testSecret, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		r.expectError("secret "+testNamespace+"/"+testSecret+" not found", "deleted")
		// And recreated.
		if _, err := secrets.Create(ctx, capiSecret(testSecret, b.pub, b.priv), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		r.expectKeys(map[string]keys.Phase{b.kid: keys.PhaseActive})
	})

	t.Run("survives an apiserver restart", func(t *testing.T) {
		r.t = t
		if err := cluster.RestartAPIServer(ctx, nil); err != nil {
			t.Fatal(err)
		}
		restarted := time.Now()
		if _, err := secrets.Update(ctx, capiSecret(testSecret, c.pub, c.priv), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		// While the apiserver was away the source may report read errors, and then the keys it
		// had; it must end up reporting the update.
		for {
			o := r.next()
			if o.Err != nil {
				t.Logf("during the restart: %v", o.Err)
				continue
			}
			if len(o.Keys) == 1 && o.Keys[0].Public.KeyID() == b.kid {
				t.Logf("reconnected with the keys from before the update")
				continue
			}
			if len(o.Keys) != 1 || o.Keys[0].Public.KeyID() != c.kid || o.Keys[0].Phase != keys.PhaseActive {
				t.Fatalf("unexpected keys %v", o.Keys)
			}
			t.Logf("update made after the restart reported %v after the restart", o.at.Sub(restarted).Round(time.Millisecond))
			break
		}
	})

	t.Run("forbidden until granted", func(t *testing.T) {
		// A second source for a Secret the service account may not read yet.
		const name = "not-granted-sa"
		if _, err := secrets.Create(ctx, capiSecret(name, c.pub, c.priv), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		cfg := rest.CopyConfig(admin)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + testNamespace + ":" + issuerSA}
		client, err := corev1client.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		r2 := runSource(t, kubesource.New(client, testNamespace, name, testLogger(t)))
		err = r2.expectError("forbidden", "get, list and watch", "resourceNames ["+name+"]", "namespace "+testNamespace)
		t.Logf("forbidden error: %v", err)
		granted := time.Now()
		grant(t, admin, name)
		r2.expectKeys(map[string]keys.Phase{c.kid: keys.PhaseActive})
		t.Logf("keys reported %v after the grant (the reflector's retry backoff)", time.Since(granted).Round(time.Millisecond))
	})

	t.Run("cancel returns", func(t *testing.T) {
		r.t = t
		start := time.Now()
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run returned %v; want nil", err)
			}
			t.Logf("Run returned %v after cancel", time.Since(start).Round(time.Microsecond))
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return within 5s of cancel")
		}
		r.done <- nil // for the cleanup
	})
}

// startAPIServer starts a real etcd and kube-apiserver for the test and returns the admin client
// configuration.
func startAPIServer(t *testing.T) *testcluster.Cluster {
	t.Helper()
	ctx := t.Context()
	bin, err := testcluster.BinDir(ctx, t.Output())
	if err != nil {
		t.Fatalf("finding kube-apiserver and etcd: %v", err)
	}
	signing, _, err := pki.GenerateRSAKeyPEM(2048)
	if err != nil {
		t.Fatal(err)
	}
	c, err := testcluster.Start(ctx, testcluster.Config{
		BinDir:                bin,
		WorkDir:               t.TempDir(),
		ServiceAccountIssuers: []string{"https://issuer.kubesource.test"},
		SigningKeyPEM:         signing,
	})
	if err != nil {
		t.Fatalf("starting the test cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping the test cluster: %v", err)
		}
	})
	return c
}
