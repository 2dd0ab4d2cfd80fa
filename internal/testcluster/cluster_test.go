package testcluster

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
)

const testIssuer = "https://issuer.testcluster.example/cluster-1"

// binDir finds (building on first use) the test binaries and reports how long that took.
func binDir(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real etcd and kube-apiserver; skipped with -short")
	}
	ctx := t.Context()
	began := time.Now()
	dir, err := BinDir(ctx, t.Output())
	if err != nil {
		t.Fatalf("finding test binaries: %v", err)
	}
	first := time.Since(began)
	began = time.Now()
	if _, err := BinDir(ctx, t.Output()); err != nil {
		t.Fatalf("finding test binaries again: %v", err)
	}
	t.Logf("binary lookup: first call %v (cold if the cache was empty), second (warm) call %v", first.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	return dir
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// kidOf is what kube-apiserver uses as kid: base64url, no padding, of SHA-256 over the PKIX DER.
func kidOf(t *testing.T, pubPEM []byte) string {
	t.Helper()
	b, _ := pem.Decode(pubPEM)
	if b == nil {
		t.Fatal("public key is not PEM")
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

type jwtClaims struct {
	Iss string   `json:"iss"`
	Sub string   `json:"sub"`
	Aud []string `json:"aud"`
}

func decodeJWT(t *testing.T, token string) (jwtHeader, jwtClaims) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	var h jwtHeader
	var c jwtClaims
	for i, v := range []any{&h, &c} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("decoding token part %d: %v", i, err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatalf("parsing token part %d: %v", i, err)
		}
	}
	return h, c
}

func jwksKids(t *testing.T, ctx context.Context, cs kubernetes.Interface) []string {
	t.Helper()
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
	if err != nil {
		t.Fatalf("GET /openid/v1/jwks: %v", err)
	}
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		t.Fatalf("parsing JWKS %s: %v", raw, err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	return kids
}

func requestToken(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, sa string, secret *corev1.Secret) string {
	t.Helper()
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: new(int64(600)),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: secret.Name, UID: secret.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest: %v", err)
	}
	return tr.Status.Token
}

func reviewToken(t *testing.T, ctx context.Context, cs kubernetes.Interface, token string) authenticationv1.TokenReviewStatus {
	t.Helper()
	rev, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenReview: %v", err)
	}
	return rev.Status
}

// leftovers lists processes whose command line mentions dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Logf("cannot scan /proc: %v", err)
		return nil
	}
	var found []string
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(dir)) {
			continue
		}
		found = append(found, e.Name()+": "+string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
	}
	return found
}

func assertGone(t *testing.T, what string, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("%s (pid %d) still exists after Stop: kill(pid, 0) = %v", what, pid, err)
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("%s process group %d still exists after Stop: kill(-pgid, 0) = %v", what, pid, err)
	}
}

func TestClusterTokenRequestAndKeyRotation(t *testing.T) {
	bins := binDir(t)
	ctx := t.Context()
	workDir := t.TempDir()

	oldPriv, oldPub, err := pki.GenerateRSAKeyPEM(2048)
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	c, err := Start(ctx, Config{
		BinDir:                bins,
		WorkDir:               workDir,
		ServiceAccountIssuers: []string{testIssuer},
		SigningKeyPEM:         oldPriv,
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
	t.Logf("cluster start (etcd + kube-apiserver ready): %v", time.Since(began).Round(time.Millisecond))
	if !strings.HasPrefix(c.URL(), "https://127.0.0.1:") {
		t.Fatalf("URL() = %q", c.URL())
	}

	cs, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	const ns, sa = "kid-test", "workload"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating service account: %v", err)
	}
	secret, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bound-to"},
		StringData: map[string]string{"k": "v"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating secret: %v", err)
	}

	oldKid := kidOf(t, oldPub)
	oldToken := requestToken(t, ctx, cs, ns, sa, secret)
	h, claims := decodeJWT(t, oldToken)
	if h.Kid != oldKid || h.Alg != "RS256" {
		t.Fatalf("token header = %+v, want kid %s alg RS256", h, oldKid)
	}
	if claims.Iss != testIssuer || claims.Sub != "system:serviceaccount:"+ns+":"+sa || !slices.Equal(claims.Aud, []string{testIssuer}) {
		t.Fatalf("token claims = %+v", claims)
	}
	if kids := jwksKids(t, ctx, cs); !slices.Equal(kids, []string{oldKid}) {
		t.Fatalf("JWKS kids = %v, want [%s]", kids, oldKid)
	}
	if st := reviewToken(t, ctx, cs, oldToken); !st.Authenticated {
		t.Fatalf("token not authenticated: %+v", st)
	}

	// The apiserver's own discovery document points at its real JWKS URL (--external-hostname).
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/.well-known/openid-configuration").DoRaw(ctx)
	if err != nil {
		t.Fatalf("GET discovery document: %v", err)
	}
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(raw, &disc); err != nil {
		t.Fatal(err)
	}
	if disc.Issuer != testIssuer || disc.JWKSURI != c.URL()+"/openid/v1/jwks" {
		t.Fatalf("discovery document = %s", raw)
	}

	// The kubeconfig reaches the same cluster as the same user.
	kc, err := clientcmd.BuildConfigFromFlags("", c.KubeconfigPath())
	if err != nil {
		t.Fatalf("loading kubeconfig: %v", err)
	}
	kcs, err := kubernetes.NewForConfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kcs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
		t.Fatalf("using kubeconfig: %v", err)
	}

	// Rotate as an operator would: new signing key, old key kept for verification.
	newPriv, newPub, err := pki.GenerateECDSAKeyPEM(elliptic.P256())
	if err != nil {
		t.Fatal(err)
	}
	url := c.URL()
	_, firstAPIServer := c.pids()
	began = time.Now()
	if err := c.RestartAPIServer(ctx, func(cfg *Config) {
		cfg.SigningKeyPEM = newPriv
		cfg.VerificationKeysPEM = [][]byte{oldPub}
	}); err != nil {
		t.Fatalf("restarting kube-apiserver: %v", err)
	}
	t.Logf("kube-apiserver restart (stop + ready): %v", time.Since(began).Round(time.Millisecond))
	assertGone(t, "first kube-apiserver", firstAPIServer)
	if c.URL() != url {
		t.Fatalf("URL changed across restart: %s -> %s", url, c.URL())
	}

	if _, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, sa, metav1.GetOptions{}); err != nil {
		t.Fatalf("service account did not survive the restart: %v", err)
	}
	newKid := kidOf(t, newPub)
	newToken := requestToken(t, ctx, cs, ns, sa, secret)
	if h, _ := decodeJWT(t, newToken); h.Kid != newKid || h.Alg != "ES256" {
		t.Fatalf("token header after rotation = %+v, want kid %s alg ES256", h, newKid)
	}
	kids := jwksKids(t, ctx, cs)
	slices.Sort(kids)
	want := []string{oldKid, newKid}
	slices.Sort(want)
	if !slices.Equal(kids, want) {
		t.Fatalf("JWKS kids after rotation = %v, want %v", kids, want)
	}
	for name, tok := range map[string]string{"token signed by the old key": oldToken, "token signed by the new key": newToken} {
		if st := reviewToken(t, ctx, cs, tok); !st.Authenticated {
			t.Errorf("%s not authenticated after rotation: %+v", name, st)
		}
	}

	// A restart that fails reports the apiserver's log and leaves a cluster that the next
	// restart repairs, with the data still there.
	err = c.RestartAPIServer(ctx, func(cfg *Config) { cfg.ExtraAPIServerArgs = []string{"--no-such-flag=1"} })
	if err == nil || !strings.Contains(err.Error(), "unknown flag: --no-such-flag") {
		t.Fatalf("restart with a bad flag: err = %v, want the apiserver's complaint", err)
	}
	if _, apiPID := c.pids(); apiPID != 0 {
		t.Fatalf("failed restart left kube-apiserver pid %d registered", apiPID)
	}
	if err := c.RestartAPIServer(ctx, func(cfg *Config) { cfg.ExtraAPIServerArgs = nil }); err != nil {
		t.Fatalf("restart after a failed restart: %v", err)
	}
	if got := c.Config().VerificationKeysPEM; len(got) != 1 || !bytes.Equal(got[0], oldPub) {
		t.Fatalf("configuration after restarts lost the verification key")
	}
	if st := reviewToken(t, ctx, cs, newToken); !st.Authenticated {
		t.Fatalf("token not authenticated after repair: %+v", st)
	}

	etcdPID, apiPID := c.pids()
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	assertGone(t, "kube-apiserver", apiPID)
	assertGone(t, "etcd", etcdPID)
	if left := leftovers(t, workDir); len(left) > 0 {
		t.Errorf("processes left behind: %v", left)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := c.RestartAPIServer(ctx, nil); err == nil {
		t.Error("RestartAPIServer after Stop succeeded")
	}
}

func TestStartFailureReportsLogAndCleansUp(t *testing.T) {
	bins := binDir(t)
	workDir := t.TempDir()
	key, _, err := pki.GenerateRSAKeyPEM(2048)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Start(t.Context(), Config{
		BinDir:                bins,
		WorkDir:               workDir,
		ServiceAccountIssuers: []string{testIssuer},
		SigningKeyPEM:         key,
		ExtraAPIServerArgs:    []string{"--no-such-flag=1"},
		Logger:                testLogger(t),
	})
	if err == nil {
		t.Fatal("Start with an unknown kube-apiserver flag succeeded")
	}
	t.Logf("Start error: %v", err)
	if !strings.Contains(err.Error(), "no-such-flag") || !strings.Contains(err.Error(), "kube-apiserver-1.log") {
		t.Errorf("error does not quote the apiserver log: %v", err)
	}
	if left := leftovers(t, workDir); len(left) > 0 {
		t.Errorf("processes left behind: %v", left)
	}
}

func TestConfigValidation(t *testing.T) {
	key, _, err := pki.GenerateECDSAKeyPEM(elliptic.P256())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no bin dir", func(c *Config) { c.BinDir = "" }, "BinDir is required"},
		{"no binaries", func(c *Config) { c.BinDir = t.TempDir() }, "kube-apiserver"},
		{"no work dir", func(c *Config) { c.WorkDir = "" }, "WorkDir is required"},
		{"no issuer", func(c *Config) { c.ServiceAccountIssuers = nil }, "ServiceAccountIssuer"},
		{"public signing key", func(c *Config) {
			c.SigningKeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}})
		}, "SigningKeyPEM"},
		{"verification key not PEM", func(c *Config) { c.VerificationKeysPEM = [][]byte{[]byte("x")} }, "VerificationKeysPEM[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bins := t.TempDir()
			for _, n := range []string{apiserverBin, etcdBin} {
				if err := os.WriteFile(filepath.Join(bins, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			cfg := Config{BinDir: bins, WorkDir: t.TempDir(), ServiceAccountIssuers: []string{testIssuer}, SigningKeyPEM: key}
			if err := cfg.validate(); err != nil {
				t.Fatalf("valid config rejected: %v", err)
			}
			tc.mutate(&cfg)
			_, err := Start(t.Context(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start error = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if mod, err := moduleOf(filepath.Join(root, "go.mod")); err != nil || mod != modulePath {
		t.Fatalf("go.mod at %s declares %q (%v)", root, mod, err)
	}

	t.Setenv(RepoRootEnv, t.TempDir())
	if _, err := RepoRoot(); err == nil {
		t.Fatalf("RepoRoot accepted $%s without %s", RepoRootEnv, buildScript)
	}
}
