package testcluster

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/signingprobe"
)

// keyID is the kid kube-apiserver gives the key in pubPEM, computed by the issuer's own code.
func keyID(t *testing.T, pubPEM []byte) string {
	t.Helper()
	ks, err := keys.ParsePEM("test key", pubPEM)
	if err != nil || len(ks) != 1 {
		t.Fatalf("parsing public key: %d keys, %v", len(ks), err)
	}
	return ks[0].KeyID()
}

// hostPort is the host:port of a base URL.
func hostPort(t *testing.T, base string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func newClientset(t *testing.T, cfg *rest.Config) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// mintKids mints n probe tokens one after the other and counts the kids of their headers.
func mintKids(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, sa string, n int) map[string]int {
	t.Helper()
	r := signingprobe.TokenRequester{Client: cs.CoreV1(), Namespace: ns, Name: sa}
	kids := map[string]int{}
	for range n {
		tok, err := r.Mint(ctx)
		if err != nil {
			t.Fatalf("minting a token: %v", err)
		}
		h, err := signingprobe.ParseHeader(tok)
		if err != nil {
			t.Fatalf("reading a token header: %v", err)
		}
		kids[h.KeyID]++
	}
	return kids
}

func diff(after, before []int) []int {
	d := slices.Clone(after)
	for i := range d {
		d[i] -= before[i]
	}
	return d
}

// TestTwoAPIServersBehindBalancer runs a control plane in the middle of a key roll: two
// kube-apiservers on one etcd, each signing with its own key and verifying both, behind one
// round-robin TCP endpoint. A client that opens a new connection per request sees both kids; one
// that keeps client-go's default (a single HTTP/2 connection) only ever sees one apiserver, which
// is why the signing probe uses signingprobe.FreshConnections.
func TestTwoAPIServersBehindBalancer(t *testing.T) {
	bins := binDir(t)
	ctx := t.Context()
	workDir := t.TempDir()

	k1Priv, k1Pub, err := pki.GenerateRSAKeyPEM(2048)
	if err != nil {
		t.Fatal(err)
	}
	k2Priv, k2Pub, err := pki.GenerateECDSAKeyPEM(elliptic.P256())
	if err != nil {
		t.Fatal(err)
	}
	kid1, kid2 := keyID(t, k1Pub), keyID(t, k2Pub)

	began := time.Now()
	c, err := Start(ctx, Config{
		BinDir:                bins,
		WorkDir:               workDir,
		ServiceAccountIssuers: []string{testIssuer},
		SigningKeyPEM:         k1Priv,
		VerificationKeysPEM:   [][]byte{k2Pub},
		Logger:                testLogger(t),
	})
	if err != nil {
		t.Fatalf("starting cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping cluster: %v", err)
		}
	})
	t.Logf("cluster start: %v", time.Since(began).Round(time.Millisecond))

	began = time.Now()
	extra, err := c.StartAPIServer(ctx, func(cfg *Config) {
		cfg.SigningKeyPEM = k2Priv
		cfg.VerificationKeysPEM = [][]byte{k1Pub}
	})
	if err != nil {
		t.Fatalf("starting the extra kube-apiserver: %v", err)
	}
	t.Cleanup(func() { _ = extra.Stop() })
	t.Logf("extra kube-apiserver start: %v", time.Since(began).Round(time.Millisecond))
	if !strings.HasPrefix(extra.URL(), "https://127.0.0.1:") || extra.URL() == c.URL() {
		t.Fatalf("extra URL() = %q, cluster URL() = %q", extra.URL(), c.URL())
	}
	// The extra apiserver's keys live apart from the main one's, which RestartAPIServer rewrites,
	// and the cluster's own configuration is untouched.
	for dir, want := range map[string][]byte{"serviceaccount": k1Priv, "serviceaccount-extra-1": k2Priv} {
		got, err := os.ReadFile(filepath.Join(workDir, dir, "signing.key"))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s/signing.key does not hold the expected key (err %v)", dir, err)
		}
	}
	if !bytes.Equal(c.Config().SigningKeyPEM, k1Priv) {
		t.Error("StartAPIServer changed the cluster's configuration")
	}
	if _, err := os.Stat(filepath.Join(workDir, "logs", "kube-apiserver-extra-1.log")); err != nil {
		t.Errorf("extra apiserver log: %v", err)
	}

	bal, err := StartBalancer(hostPort(t, c.URL()), hostPort(t, extra.URL()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := bal.Close(); err != nil {
			t.Errorf("closing balancer: %v", err)
		}
	})
	balanced := c.RESTConfig()
	balanced.Host = bal.URL()

	fresh := newClientset(t, signingprobe.FreshConnections(balanced))
	const ns, sa = "roll", "probe"
	if _, err := fresh.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	if _, err := fresh.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating service account: %v", err)
	}

	before := bal.Connections()
	kids := mintKids(t, ctx, fresh, ns, sa, 6)
	perBackend := diff(bal.Connections(), before)
	t.Logf("fresh connections: kids %v, connections per backend %v", kids, perBackend)
	if len(kids) != 2 || kids[kid1] == 0 || kids[kid2] == 0 {
		t.Errorf("kids with a new connection per request = %v, want both %s (main) and %s (extra)", kids, kid1, kid2)
	}
	if perBackend[0] == 0 || perBackend[1] == 0 {
		t.Errorf("balancer connections per backend = %v, want both used", perBackend)
	}

	plain := newClientset(t, balanced)
	before = bal.Connections()
	kids = mintKids(t, ctx, plain, ns, sa, 6)
	perBackend = diff(bal.Connections(), before)
	t.Logf("client-go defaults: kids %v, connections per backend %v", kids, perBackend)
	if len(kids) != 1 || (kids[kid1] != 6 && kids[kid2] != 6) {
		t.Errorf("kids with client-go's default transport = %v, want all 6 from one apiserver", kids)
	}
	if perBackend[0]+perBackend[1] != 1 {
		t.Errorf("client-go's default transport opened %v connections, want one", perBackend)
	}

	// Stopping the extra apiserver leaves the cluster serving.
	extraPID := extra.pid()
	began = time.Now()
	if err := extra.Stop(); err != nil {
		t.Fatalf("stopping the extra kube-apiserver: %v", err)
	}
	t.Logf("extra kube-apiserver stop: %v", time.Since(began).Round(time.Millisecond))
	assertGone(t, "extra kube-apiserver", extraPID)
	if err := extra.Stop(); err != nil {
		t.Errorf("second Stop of the extra kube-apiserver: %v", err)
	}
	direct := newClientset(t, c.RESTConfig())
	if kids := mintKids(t, ctx, direct, ns, sa, 1); kids[kid1] != 1 {
		t.Errorf("main kube-apiserver after the extra one stopped signs with %v, want %s", kids, kid1)
	}

	// mutate may be nil: a second apiserver just like the main one. The cluster's Stop stops it.
	extra2, err := c.StartAPIServer(ctx, nil)
	if err != nil {
		t.Fatalf("starting a second extra kube-apiserver: %v", err)
	}
	toExtra2 := c.RESTConfig()
	toExtra2.Host = extra2.URL()
	if kids := mintKids(t, ctx, newClientset(t, toExtra2), ns, sa, 1); kids[kid1] != 1 {
		t.Errorf("extra kube-apiserver started without mutate signs with %v, want %s", kids, kid1)
	}
	if _, err := os.Stat(filepath.Join(workDir, "logs", "kube-apiserver-extra-2.log")); err != nil {
		t.Errorf("second extra apiserver log: %v", err)
	}
	etcdPID, apiPID := c.pids()
	extra2PID := extra2.pid()
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	assertGone(t, "second extra kube-apiserver", extra2PID)
	assertGone(t, "kube-apiserver", apiPID)
	assertGone(t, "etcd", etcdPID)
	if left := leftovers(t, workDir); len(left) > 0 {
		t.Errorf("processes left behind: %v", left)
	}
	if err := extra2.Stop(); err != nil {
		t.Errorf("Stop of an extra kube-apiserver the cluster already stopped: %v", err)
	}
	if _, err := c.StartAPIServer(ctx, nil); err == nil {
		t.Error("StartAPIServer after Stop succeeded")
	}
}
