package fleet

import (
	"context"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys/kubesource"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
)

// TestFleetLifecycle: each cluster has its own key lifecycle in `<cluster>-oidc-keys`, read by the
// fleet's one watch: a key staged for one cluster is published for it alone; promote writes it
// into that cluster's `<cluster>-sa`, and the outgoing key stays published.
func TestFleetLifecycle(t *testing.T) {
	mgmt := startAPIServer(t)
	kube := kubernetes.NewForConfigOrDie(mgmt.RESTConfig())
	createNamespaces(t, kube, "team-a", "team-b")
	alpha, beta := newSigningKey(t, true), newSigningKey(t, false)
	h := &fleetHarness{t: t, kube: kube}
	h.create(capiSecret("team-a", "alpha", alpha))
	h.create(capiSecret("team-b", "beta", beta))
	h = startFleet(t, kube, func(c *Config) {
		c.Lifecycle = &LifecycleConfig{Base: lifecycle.Config{
			Secrets: kube.CoreV1(), Events: kube.CoreV1(), MaxTokenLifetime: time.Hour, MaxAge: time.Minute,
		}}
	})
	h.waitFor("the fleet ready", 30*time.Second, func() bool { return h.fleet.Status().Ready })
	if !equalKIDs(h.kids("alpha"), alpha.kid) {
		t.Fatalf("alpha before staging: %v", h.kids("alpha"))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.fleet.RunLifecycle(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	if _, ok := h.fleet.Lifecycle("team-a", "nope"); ok {
		t.Fatal("a lifecycle for a cluster that is not served")
	}
	m, ok := h.fleet.Lifecycle("team-a", "alpha")
	if !ok {
		t.Fatal("no lifecycle for alpha")
	}
	_, betaBefore := h.get("/clusters/beta/openid/v1/jwks")
	staged, err := m.Stage(ctx, lifecycle.AlgorithmES256)
	if err != nil {
		t.Fatal(err)
	}
	took := h.waitFor("the staged key published", 10*time.Second, func() bool {
		got := h.kids("alpha")
		return slices.Contains(got, staged.KID) && slices.Contains(got, alpha.kid)
	})
	t.Logf("staged key served %s after Stage returned", took.Round(time.Millisecond))
	sec, err := kube.CoreV1().Secrets("team-a").Get(ctx, "alpha"+StateSuffix, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sec.Labels[ClusterNameLabel] != "alpha" {
		t.Fatalf("state Secret labels %v", sec.Labels)
	}
	if _, after := h.get("/clusters/beta/openid/v1/jwks"); string(after) != string(betaBefore) {
		t.Fatal("beta's JWKS changed when alpha staged a key")
	}

	if _, err := m.Promote(ctx, staged.KID, true); err != nil {
		t.Fatal(err)
	}
	sa, err := kube.CoreV1().Secrets("team-a").Get(ctx, "alpha-sa", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	inSecret, err := kubesource.KeysFromSecret(sa)
	if err != nil {
		t.Fatal(err)
	}
	if inSecret[0].Public.KeyID() != staged.KID || inSecret[0].Phase != "active" {
		t.Fatalf("alpha-sa after promote: %v", inSecret)
	}
	h.waitFor("both keys published after promote", 10*time.Second, func() bool {
		got := h.kids("alpha")
		return len(got) == 2 && got[0] == staged.KID && slices.Contains(got, alpha.kid)
	})
	for _, c := range h.fleet.Clusters() {
		if c.Name == "alpha" && (!c.Ready || !c.Healthy || c.Keys != 2) {
			t.Fatalf("alpha's status %+v, want ready, healthy, 2 keys", c)
		}
	}
	if st := h.fleet.Status(); st.Serving != 2 {
		t.Fatalf("fleet status %+v, want 2 serving", st)
	}
	// The state holds the staged key's private half; the fleet's cache does not.
	fs, exists, err := h.fleet.lookup("team-a/alpha" + StateSuffix)
	if err != nil || !exists || !fs.state || len(fs.keys) == 0 {
		t.Fatalf("cached state: %+v %v %v", fs, exists, err)
	}
}
