package fleet

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/issuer"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/server"
)

const testTemplate = "https://oidc.fleet.test/clusters/{cluster}"

// signingKey is a generated key pair as Cluster API stores it.
type signingKey struct {
	priv, pub []byte
	kid       string
}

func newSigningKey(t *testing.T, rsaKey bool) signingKey {
	t.Helper()
	var (
		priv, pub []byte
		err       error
	)
	if rsaKey {
		priv, pub, err = pki.GenerateRSAKeyPEM(2048)
	} else {
		priv, pub, err = pki.GenerateECDSAKeyPEM(elliptic.P256())
	}
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pub)
	pk, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	kid, err := keys.KeyID(pk)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{priv: priv, pub: pub, kid: kid}
}

// capiSecret is `<cluster>-sa` as Cluster API writes it: tls.crt holds the PUBLIC key.
func capiSecret(ns, clusterName string, k signingKey) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: clusterName + SigningKeySuffix, Labels: map[string]string{ClusterNameLabel: clusterName}},
		Type:       "cluster.x-k8s.io/secret",
		Data:       map[string][]byte{"tls.crt": k.pub, "tls.key": k.priv},
	}
}

type fleetHarness struct {
	t      *testing.T
	kube   kubernetes.Interface
	fleet  *Fleet
	srv    *server.Server
	h      http.Handler
	reg    *prometheus.Registry
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startAPIServer(t *testing.T) *testcluster.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver; skipped with -short")
	}
	bin, err := testcluster.BinDir(t.Context(), t.Output())
	if err != nil {
		t.Fatalf("finding kube-apiserver and etcd: %v", err)
	}
	signing, _, err := pki.GenerateRSAKeyPEM(2048)
	if err != nil {
		t.Fatal(err)
	}
	c, err := testcluster.Start(t.Context(), testcluster.Config{
		BinDir: bin, WorkDir: t.TempDir(), ServiceAccountIssuers: []string{"https://management.fleet.test"}, SigningKeyPEM: signing,
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

func startFleet(t *testing.T, kube kubernetes.Interface, mutate func(*Config)) *fleetHarness {
	t.Helper()
	tmpl, err := ParseURLTemplate(testTemplate)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	srv, err := server.New(server.Config{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Secrets: kube.CoreV1(), Events: kube.CoreV1(), Template: tmpl,
		Documents: documents.Config{MaxAge: documents.DefaultMaxAge}, Retention: time.Hour,
		Routes: srv, Logger: logger,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(f.Metrics())
	ctx, cancel := context.WithCancel(context.Background())
	h := &fleetHarness{t: t, kube: kube, fleet: f, srv: srv, h: srv.PublicHandler(), reg: reg, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- f.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *fleetHarness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("fleet Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Error("fleet Run did not return within 10s of its context ending")
	}
	h.cancel = nil
	if h.t.Failed() {
		h.t.Logf("fleet log:\n%s", h.logs.String())
	}
}

func (h *fleetHarness) get(path string) (int, []byte) {
	rec := httptest.NewRecorder()
	h.h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, rec.Body.Bytes()
}

// kids are the kids of the JWKS at path, or nil when it does not answer 200.
func (h *fleetHarness) kids(cluster string) []string {
	code, body := h.get("/clusters/" + cluster + documents.JWKSPath)
	if code != 200 {
		return nil
	}
	var jwks struct {
		Keys []struct {
			KID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &jwks); err != nil {
		h.t.Fatalf("JWKS of %s: %v", cluster, err)
	}
	var out []string
	for _, k := range jwks.Keys {
		out = append(out, k.KID)
	}
	return out
}

func (h *fleetHarness) waitFor(what string, d time.Duration, cond func() bool) time.Duration {
	h.t.Helper()
	begin := time.Now()
	for !cond() {
		if time.Since(begin) > d {
			h.t.Fatalf("timed out after %s waiting for %s\nstatus: %+v", d, what, h.fleet.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(begin)
}

func (h *fleetHarness) create(s *corev1.Secret) {
	h.t.Helper()
	if _, err := h.kube.CoreV1().Secrets(s.Namespace).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func createNamespaces(t *testing.T, kube kubernetes.Interface, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func equalKIDs(got []string, want ...string) bool {
	return strings.Join(got, ",") == strings.Join(want, ",")
}

// TestFleet runs the fleet against a real kube-apiserver holding the Secrets of several clusters.
func TestFleet(t *testing.T) {
	cluster := startAPIServer(t)
	kube := kubernetes.NewForConfigOrDie(cluster.RESTConfig())
	createNamespaces(t, kube, "team-a", "team-b")
	alpha, beta := newSigningKey(t, true), newSigningKey(t, false)
	h := &fleetHarness{t: t, kube: kube}
	h.create(capiSecret("team-a", "alpha", alpha))
	h.create(capiSecret("team-b", "beta", beta))
	// Other Secrets of a cluster carry the label too; they are not signing keys.
	kubeconfig := capiSecret("team-a", "alpha", alpha)
	kubeconfig.Name, kubeconfig.Data = "alpha-kubeconfig", map[string][]byte{"value": []byte("apiVersion: v1")}
	h.create(kubeconfig)
	// A `-sa` Secret without the label is not a cluster's.
	unlabelled := capiSecret("team-a", "gamma", newSigningKey(t, false))
	unlabelled.Labels = nil
	h.create(unlabelled)

	rec := &recordingPublishers{}
	h = startFleet(t, kube, func(c *Config) { c.Retention = 3 * time.Second; c.Publishers = rec })
	h.waitFor("the fleet ready", 30*time.Second, func() bool { return h.fleet.Status().Ready })

	t.Run("each cluster exactly its own keys", func(t *testing.T) {
		if got := h.kids("alpha"); !equalKIDs(got, alpha.kid) {
			t.Errorf("alpha's JWKS kids %v, want [%s]", got, alpha.kid)
		}
		if got := h.kids("beta"); !equalKIDs(got, beta.kid) {
			t.Errorf("beta's JWKS kids %v, want [%s]", got, beta.kid)
		}
		code, body := h.get("/clusters/alpha" + documents.DiscoveryPath)
		if code != 200 || !bytes.Contains(body, []byte(`"issuer":"https://oidc.fleet.test/clusters/alpha"`)) {
			t.Errorf("alpha's discovery: %d %s", code, body)
		}
	})
	t.Run("404 for what is not a cluster", func(t *testing.T) {
		for _, p := range []string{
			"/clusters/gamma/openid/v1/jwks", "/clusters/alpha-kubeconfig/openid/v1/jwks", "/clusters/nope/openid/v1/jwks",
			"/clusters/beta/../alpha/openid/v1/jwks", "/clusters/alpha/..%2F/openid/v1/jwks", "/openid/v1/jwks", "/clusters/openid/v1/jwks",
		} {
			if code, _ := h.get(p); code != 404 {
				t.Errorf("GET %s: %d, want 404", p, code)
			}
		}
	})

	t.Run("cluster created at runtime", func(t *testing.T) {
		delta := newSigningKey(t, true)
		h.create(capiSecret("team-b", "delta", delta))
		took := h.waitFor("delta served", 10*time.Second, func() bool { return equalKIDs(h.kids("delta"), delta.kid) })
		t.Logf("a new cluster was served %s after its Secret was created", took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("took %s, want within a second", took)
		}
	})

	t.Run("garbage keeps the last good keys and leaves the others alone", func(t *testing.T) {
		_, betaBefore := h.get("/clusters/beta" + documents.JWKSPath)
		_, alphaBefore := h.get("/clusters/alpha" + documents.JWKSPath)
		sec, err := kube.CoreV1().Secrets("team-a").Get(context.Background(), "alpha-sa", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sec.Data = map[string][]byte{"tls.crt": []byte("-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n"), "tls.key": []byte("nope")}
		if sec, err = kube.CoreV1().Secrets("team-a").Update(context.Background(), sec, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		h.waitFor("alpha failing", 10*time.Second, func() bool { return h.fleet.Status().Failing == 1 })
		if _, after := h.get("/clusters/alpha" + documents.JWKSPath); !bytes.Equal(after, alphaBefore) {
			t.Errorf("alpha's JWKS changed on garbage:\n%s\nwas\n%s", after, alphaBefore)
		}
		if _, after := h.get("/clusters/beta" + documents.JWKSPath); !bytes.Equal(after, betaBefore) {
			t.Errorf("beta's JWKS changed:\n%s\nwas\n%s", after, betaBefore)
		}
		if got := testutil.ToFloat64(gaugeOf(t, h.reg, "kube_oidc_issuer_fleet_cluster_healthy", "namespace=team-a", "cluster=alpha")); got != 0 {
			t.Errorf("alpha healthy metric %v, want 0", got)
		}
		// Repaired with a new key: served.
		alpha2 := newSigningKey(t, false)
		sec.Data = capiSecret("team-a", "alpha", alpha2).Data
		if _, err := kube.CoreV1().Secrets("team-a").Update(context.Background(), sec, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		h.waitFor("alpha's new key", 10*time.Second, func() bool { return equalKIDs(h.kids("alpha"), alpha2.kid) })
		alpha = alpha2
	})

	t.Run("refused: bad name, URL conflict", func(t *testing.T) {
		_, alphaBefore := h.get("/clusters/alpha" + documents.JWKSPath)
		h.create(capiSecret("team-b", "alpha", newSigningKey(t, false))) // same name, other namespace, no {namespace}
		bad := capiSecret("team-b", "bad.name", newSigningKey(t, false))
		h.create(bad)
		h.waitFor("two refusals", 10*time.Second, func() bool { return h.fleet.Status().Refused == 2 })
		st := h.fleet.Status()
		reasons := map[string]string{}
		for _, r := range st.Refusals {
			reasons[r.Secret] = r.Reason
		}
		if reasons["team-b/alpha-sa"] != reasonConflict || reasons["team-b/bad.name-sa"] != reasonBadName {
			t.Errorf("refusals %+v", st.Refusals)
		}
		if _, after := h.get("/clusters/alpha" + documents.JWKSPath); !bytes.Equal(after, alphaBefore) {
			t.Errorf("alpha's JWKS changed by a conflicting cluster:\n%s", after)
		}
		if got := testutil.ToFloat64(counterOf(t, h.reg, "kube_oidc_issuer_fleet_refusals_total", "reason="+reasonConflict)); got != 1 {
			t.Errorf("url_conflict refusals %v, want 1", got)
		}
		h.waitFor("a Warning Event on the conflicting Secret", 10*time.Second, func() bool {
			evs, err := kube.CoreV1().Events("team-b").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=alpha-sa"})
			return err == nil && len(evs.Items) > 0 && evs.Items[0].Reason == "FleetClusterRefused"
		})
	})

	t.Run("deletion: retention, then 404, then the refused cluster takes the URL", func(t *testing.T) {
		_, alphaBefore := h.get("/clusters/alpha" + documents.JWKSPath)
		if err := kube.CoreV1().Secrets("team-a").Delete(context.Background(), "alpha-sa", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		h.waitFor("alpha retained", 10*time.Second, func() bool { return h.fleet.Status().Retained == 1 })
		if code, body := h.get("/clusters/alpha" + documents.JWKSPath); code != 200 || !bytes.Equal(body, alphaBefore) {
			t.Fatalf("alpha during retention: %d %s", code, body)
		}
		took := h.waitFor("alpha's retention to pass", 20*time.Second, func() bool {
			for _, c := range h.fleet.Clusters() {
				if c.ClusterRef == (ClusterRef{"team-a", "alpha"}) {
					return false
				}
			}
			return true
		})
		t.Logf("alpha removed %s after being retained (retention 3s)", took.Round(time.Millisecond))
		// team-b/alpha was refused for the URL; it is served now, with its own keys.
		h.waitFor("team-b/alpha served", 10*time.Second, func() bool {
			for _, c := range h.fleet.Clusters() {
				if c.ClusterRef == (ClusterRef{"team-b", "alpha"}) && c.Ready {
					return true
				}
			}
			return false
		})
		if _, body := h.get("/clusters/alpha" + documents.JWKSPath); bytes.Equal(body, alphaBefore) {
			t.Fatal("the URL still serves the deleted cluster's keys")
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if !equalKIDs(rec.removed, "https://oidc.fleet.test/clusters/alpha") {
			t.Errorf("publishers told of removals %v, want alpha's URL once", rec.removed)
		}
		if rec.sets["https://oidc.fleet.test/clusters/beta"] != 1 {
			t.Errorf("beta's publishers got %d sets, want 1", rec.sets["https://oidc.fleet.test/clusters/beta"])
		}
	})

	t.Run("stops promptly", func(t *testing.T) {
		begin := time.Now()
		h.stop()
		if took := time.Since(begin); took > 5*time.Second {
			t.Errorf("stopping took %s", took)
		}
	})
}

func gaugeOf(t *testing.T, reg *prometheus.Registry, name string, labels ...string) prometheus.Collector {
	t.Helper()
	return metricOf(t, reg, name, labels)
}

func counterOf(t *testing.T, reg *prometheus.Registry, name string, labels ...string) prometheus.Collector {
	t.Helper()
	return metricOf(t, reg, name, labels)
}

// metricOf finds the series of the registry with the NAME=VALUE labels, as a collector ToFloat64
// can read.
func metricOf(t *testing.T, reg *prometheus.Registry, name string, labels []string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]bool{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()+"="+lp.GetValue()] = true
			}
			for _, l := range labels {
				if !have[l] {
					continue metrics
				}
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x"}, func() float64 { return v })
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return nil
}

// Memory publishers record what a cluster's mirrors would be handed.
type recordingPublishers struct {
	mu      sync.Mutex
	sets    map[string]int
	removed []string
}

func (r *recordingPublishers) ForCluster(c ClusterRef, issuerURL string) ([]issuer.Publisher, error) {
	return []issuer.Publisher{publisherFunc(func(*documents.Set) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.sets == nil {
			r.sets = map[string]int{}
		}
		r.sets[issuerURL]++
	})}, nil
}

func (r *recordingPublishers) Removed(c ClusterRef, issuerURL string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removed = append(r.removed, issuerURL)
}

type publisherFunc func(*documents.Set)

func (f publisherFunc) Publish(s *documents.Set) { f(s) }

// TestEmptyFleetIsReady: a management cluster without any cluster yet is ready (and serves 404s).
func TestEmptyFleetIsReady(t *testing.T) {
	cluster := startAPIServer(t)
	kube := kubernetes.NewForConfigOrDie(cluster.RESTConfig())
	h := startFleet(t, kube, nil)
	h.waitFor("the empty fleet ready", 30*time.Second, func() bool { return h.fleet.Status().Ready })
	if code, _ := h.get("/clusters/any/openid/v1/jwks"); code != 404 {
		t.Fatalf("GET of an unknown cluster: %d", code)
	}
}
