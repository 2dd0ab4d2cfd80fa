package fleet

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/signingprobe"
)

// startWorkloadCluster starts a second kube-apiserver, a workload cluster signing with k.
func startWorkloadCluster(t *testing.T, k signingKey) *testcluster.Cluster {
	t.Helper()
	bin, err := testcluster.BinDir(t.Context(), t.Output())
	if err != nil {
		t.Fatal(err)
	}
	c, err := testcluster.Start(t.Context(), testcluster.Config{
		BinDir: bin, WorkDir: t.TempDir(), ServiceAccountIssuers: []string{"https://oidc.fleet.test/clusters/work"}, SigningKeyPEM: k.priv,
	})
	if err != nil {
		t.Fatalf("starting the workload cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping the workload cluster: %v", err)
		}
	})
	return c
}

// TestProbes: the fleet asks a real workload kube-apiserver, through the admin kubeconfig Cluster
// API keeps in `<cluster>-kubeconfig`, which key it signs with; a Secret that no longer holds that
// key is reported (status, Warning Event); a cluster without a kubeconfig Secret is reported as
// such and holds up no other.
func TestProbes(t *testing.T) {
	mgmt := startAPIServer(t)
	kube := kubernetes.NewForConfigOrDie(mgmt.RESTConfig())
	createNamespaces(t, kube, "team-a")
	signing := newSigningKey(t, true)
	work := startWorkloadCluster(t, signing)
	// A real cluster's controller-manager creates kube-system/default; the test cluster runs none.
	workKube := kubernetes.NewForConfigOrDie(work.RESTConfig())
	if _, err := workKube.CoreV1().ServiceAccounts("kube-system").Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := os.ReadFile(work.KubeconfigPath())
	if err != nil {
		t.Fatal(err)
	}
	h := &fleetHarness{t: t, kube: kube}
	h.create(capiSecret("team-a", "work", signing))
	h.create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "work" + KubeconfigSuffix, Labels: map[string]string{ClusterNameLabel: "work"}},
		Type:       "cluster.x-k8s.io/secret", Data: map[string][]byte{"value": kubeconfig},
	})
	h.create(capiSecret("team-a", "lonely", newSigningKey(t, false))) // no kubeconfig Secret
	h = startFleet(t, kube, func(c *Config) {
		c.Lifecycle = &LifecycleConfig{Base: lifecycle.Config{Secrets: kube.CoreV1(), MaxTokenLifetime: time.Hour}}
	})
	h.waitFor("the fleet ready", 30*time.Second, func() bool { return h.fleet.Status().Ready })

	probes, err := NewProbes(h.fleet, ProbeConfig{Secrets: kube.CoreV1(), ServiceAccount: "kube-system/default",
		Interval: time.Hour, ProbesPerRound: 2, Timeout: 10 * time.Second, Logger: h.fleet.logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	begin := time.Now()
	probes.round(ctx)
	t.Logf("one probe round over 2 clusters: %s", time.Since(begin).Round(time.Millisecond))
	st := probes.Status()
	if got := st["team-a/work"]; got.Result != signingprobe.ResultOK || !slices.Equal(got.Signing, []string{signing.kid}) || len(got.Unpublished) != 0 {
		t.Fatalf("work: %+v, want ok signing %s", got, signing.kid)
	}
	if got := st["team-a/lonely"]; got.Result != "no_kubeconfig" || !strings.Contains(got.LastError, "lonely-kubeconfig") {
		t.Fatalf("lonely: %+v, want no_kubeconfig", got)
	}
	// Without a key lifecycle state, nothing was recorded (no state Secret created for it).
	if _, err := kube.CoreV1().Secrets("team-a").Get(ctx, "work"+StateSuffix, metav1.GetOptions{}); err == nil {
		t.Fatal("the probe created a state Secret")
	}
	// With one, the round is recorded: the lifecycle will not prune a key seen signing.
	m, _ := h.fleet.Lifecycle("team-a", "work")
	if _, err := m.Stage(ctx, lifecycle.AlgorithmES256); err != nil {
		t.Fatal(err)
	}
	h.waitFor("the state Secret in the fleet's cache", 10*time.Second, func() bool {
		fs, ok, _ := h.fleet.lookup("team-a/work" + StateSuffix)
		return ok && fs.state
	})
	probes.round(ctx)
	snap, err := m.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(snap.State.Signing.KIDs, []string{signing.kid}) {
		t.Fatalf("recorded signing observation %+v, want [%s]", snap.State.Signing, signing.kid)
	}

	// The Secret is replaced by another key while the control plane still signs with the old one.
	other := newSigningKey(t, true)
	sec, err := kube.CoreV1().Secrets("team-a").Get(ctx, "work-sa", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data = capiSecret("team-a", "work", other).Data
	if _, err := kube.CoreV1().Secrets("team-a").Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitFor("work's new key published", 10*time.Second, func() bool {
		got := h.kids("work")
		return slices.Contains(got, other.kid) && !slices.Contains(got, signing.kid)
	})
	probes.round(ctx)
	if got := probes.Status()["team-a/work"]; !slices.Equal(got.Unpublished, []string{signing.kid}) {
		t.Fatalf("work after the Secret changed: %+v, want %s unpublished", got, signing.kid)
	}
	sum := probes.Summary()
	if sum.Probed != 2 || len(sum.Unpublished) != 1 || len(sum.Failing) != 1 {
		t.Fatalf("summary %+v", sum)
	}
	h.waitFor("a SigningKeyUnpublished Event", 10*time.Second, func() bool {
		evs, err := kube.CoreV1().Events("team-a").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=work-sa"})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.Reason == "SigningKeyUnpublished" && strings.Contains(e.Message, signing.kid) {
				return true
			}
		}
		return false
	})
	// No credential of the kubeconfig reaches the log.
	if strings.Contains(h.logs.String(), "BEGIN") || strings.Contains(h.logs.String(), "client-key-data") {
		t.Fatal("the log holds kubeconfig material")
	}
}
