package integration

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/signer"
)

// signerRefreshHint is short so that key additions reach kube-apiserver quickly in the test.
const signerRefreshHint = 2 * time.Second

// runningSigner is an in-process external signer serving on a unix socket.
type runningSigner struct {
	srv    *signer.Server
	socket string
	cancel context.CancelFunc
	done   chan error
}

// startSigner listens on socket and serves srv until stop or the test's end.
func startSigner(t *testing.T, srv *signer.Server, socket string) *runningSigner {
	t.Helper()
	s := &runningSigner{srv: srv, socket: socket}
	s.start(t)
	t.Cleanup(func() { s.stop(t) })
	return s
}

// start (re)creates the socket and serves on it.
func (s *runningSigner) start(t *testing.T) {
	t.Helper()
	lis, err := signer.Listen(s.socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan error, 1)
	go func(done chan<- error) { done <- s.srv.Serve(ctx, lis) }(s.done)
}

// stop stops the signer and waits until its socket is closed; idempotent.
func (s *runningSigner) stop(t *testing.T) {
	t.Helper()
	if s.done == nil {
		return
	}
	s.cancel()
	if err := <-s.done; err != nil {
		t.Errorf("signer: %v", err)
	}
	s.done = nil
}

// startSignerCluster starts kube-apiserver + etcd signing through the external signer on socket
// (which must answer: kube-apiserver fetches its keys while it starts), stopped when the test
// ends, with the test namespace and service account created. signerLog, if set, is shown when
// the start fails.
func startSignerCluster(ctx context.Context, t *testing.T, workDir, issuer, socket string, signerLog func() string) (*testcluster.Cluster, kubernetes.Interface) {
	t.Helper()
	cluster, err := testcluster.Start(ctx, testcluster.Config{
		BinDir:                        shared.binDir,
		WorkDir:                       workDir,
		ServiceAccountIssuers:         []string{issuer},
		ServiceAccountSigningEndpoint: socket,
	})
	if err != nil {
		if signerLog != nil {
			t.Fatalf("kube-apiserver with the external signer: %v\nsigner log:\n%s", err, signerLog())
		}
		t.Fatalf("kube-apiserver with the external signer: %v", err)
	}
	t.Cleanup(func() {
		if err := cluster.Stop(); err != nil {
			t.Errorf("stopping the cluster: %v", err)
		}
	})
	kube, err := kubernetes.NewForConfig(cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().ServiceAccounts(testNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: testSA}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return cluster, kube
}

// signerMint asks kube-apiserver for a token for the test service account, bounded by timeout.
func signerMint(ctx context.Context, kube kubernetes.Interface, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tr, err := kube.CoreV1().ServiceAccounts(testNamespace).CreateToken(ctx, testSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{stsAudience}, ExpirationSeconds: ptr(int64(3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}

// signerReview is kube-apiserver's TokenReview verdict on token.
func signerReview(ctx context.Context, t *testing.T, kube kubernetes.Interface, token string) bool {
	t.Helper()
	tr, err := kube.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{stsAudience}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenReview: %v", err)
	}
	return tr.Status.Authenticated
}

// apiserverJWKS is kube-apiserver's own /openid/v1/jwks, keyed by kid.
func apiserverJWKS(ctx context.Context, t *testing.T, kube kubernetes.Interface) map[string]jwk {
	t.Helper()
	body, err := kube.Discovery().RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
	if err != nil {
		t.Fatalf("kube-apiserver GET /openid/v1/jwks: %v", err)
	}
	return parseJWKS(t, body)
}

// expectedJWKS renders pubs the way package keys (and so serve) publishes them, keyed by kid.
func expectedJWKS(t *testing.T, pubs ...crypto.PublicKey) map[string]jwk {
	t.Helper()
	var ks []keys.Key
	for _, p := range pubs {
		pk, err := keys.NewPublicKey(p)
		if err != nil {
			t.Fatal(err)
		}
		ks = append(ks, keys.Key{Public: pk, Phase: keys.PhasePublished})
	}
	body, err := keys.RenderJWKS(keys.NewSet(ks...), keys.JWKSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return parseJWKS(t, body)
}

func newSignerRSAKey(t *testing.T) (*rsa.PrivateKey, string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	kid, err := keys.KeyID(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return k, kid
}

// TestExternalSignerRotationWithoutRestart runs a real kube-apiserver v1.37 with
// --service-account-signing-endpoint and no key files against the in-process signer: tokens carry
// the signer's header and kid and verify; kube-apiserver publishes the signer's keys; switching
// the active key changes the kid of new tokens with no apiserver restart; the signer stopped and
// restarted under a running apiserver.
func TestExternalSignerRotationWithoutRestart(t *testing.T) {
	skipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	k1, kid1 := newSignerRSAKey(t)
	k2, kid2 := newSignerRSAKey(t)
	ks, err := signer.NewStaticKeySet(k1, k2)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv, err := signer.NewServer(signer.Config{Keys: ks, RefreshHint: signerRefreshHint, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	// Socket paths hold at most 107 bytes; t.TempDir() names can be longer.
	sockDir, err := os.MkdirTemp("", "koi-sgn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	socket := filepath.Join(sockDir, "signer.sock")
	sig := startSigner(t, srv, socket)

	// kube-apiserver fetches the keys while it starts, so the signer comes first.
	start := time.Now()
	_, kube := startSignerCluster(ctx, t, filepath.Join(t.TempDir(), "cluster"), "https://oidc.example.test/clusters/signer", socket, nil)
	t.Logf("kube-apiserver + etcd with the external signer up in %s", time.Since(start).Round(time.Millisecond))

	// 1. A token is signed by K1, with exactly the header kube-apiserver's client accepts.
	t1, err := signerMint(ctx, kube, 10*time.Second)
	if err != nil {
		t.Fatalf("TokenRequest: %v", err)
	}
	assertSignerToken(t, t1, kid1, k1.Public())
	if !signerReview(ctx, t, kube, t1) {
		t.Fatal("TokenReview rejects a token signed by K1")
	}

	// 2. kube-apiserver publishes what FetchKeys returns: K1 and K2, rendered as package keys
	// renders them.
	if got, want := apiserverJWKS(ctx, t, kube), expectedJWKS(t, k1.Public(), k2.Public()); !maps.Equal(got, want) {
		t.Fatalf("kube-apiserver JWKS %v, want %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}

	// 3. Switch the active key: new tokens carry K2 from the same kube-apiserver process.
	promoted := time.Now()
	if err := ks.Promote(kid2); err != nil {
		t.Fatal(err)
	}
	t2, attempts := mintUntilKID(ctx, t, kube, kid2, signerRefreshHint)
	t.Logf("after the switch to K2: first token with kid K2 %s later, attempt %d (refresh hint %s)",
		time.Since(promoted).Round(time.Millisecond), attempts, signerRefreshHint)
	assertSignerToken(t, t2, kid2, k2.Public())
	if !signerReview(ctx, t, kube, t1) || !signerReview(ctx, t, kube, t2) {
		t.Fatal("TokenReview rejects the token from before or after the switch")
	}

	// 4. A key added to the set reaches kube-apiserver's JWKS within one refresh hint.
	k3, kid3 := newSignerRSAKey(t)
	added := time.Now()
	if _, err := ks.Add(k3); err != nil {
		t.Fatal(err)
	}
	waitAPIServerJWKS(ctx, t, kube, 2*signerRefreshHint+2*time.Second, "K3 published", func(m map[string]jwk) bool {
		_, ok := m[kid3]
		return ok && len(m) == 3
	})
	t.Logf("a key added to the signer: in kube-apiserver's JWKS %s later", time.Since(added).Round(time.Millisecond))

	// 4b. A key promoted before kube-apiserver ever fetched it: the apiserver fetches on the
	// unknown kid, so the token verifies at once.
	k4, kid4 := newSignerRSAKey(t)
	if _, err := ks.Add(k4); err != nil {
		t.Fatal(err)
	}
	if err := ks.Promote(kid4); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	t4, _ := mintUntilKID(ctx, t, kube, kid4, signerRefreshHint)
	if !signerReview(ctx, t, kube, t4) {
		t.Fatal("TokenReview rejects a token signed by a key promoted right after it was added")
	}
	t.Logf("a key added and promoted at once: token minted and accepted by TokenReview in %s", time.Since(began).Round(time.Millisecond))

	// 5. The signer stopped: minting fails, tokens already issued still verify (cached keys).
	sig.stop(t)
	began = time.Now()
	if tok, err := signerMint(ctx, kube, 5*time.Second); err == nil {
		t.Fatalf("TokenRequest succeeded with the signer stopped: kid %s", kidOf(t, tok))
	} else {
		t.Logf("signer stopped: TokenRequest failed after %s: %.160s", time.Since(began).Round(time.Millisecond), err)
	}
	for name, tok := range map[string]string{"K1": t1, "K2": t2, "K4": t4} {
		if !signerReview(ctx, t, kube, tok) {
			t.Errorf("with the signer stopped, TokenReview rejects the %s token", name)
		}
	}
	t.Logf("signer stopped: TokenReview still accepts the K1, K2 and K4 tokens (kube-apiserver's cached keys)")

	// 6. The signer restarted on the same socket: minting works again, with the active key.
	restarted := time.Now()
	sig.start(t)
	t5, attempts := mintUntilKID(ctx, t, kube, kid4, 30*time.Second)
	t.Logf("signer restarted: first token %s later, attempt %d", time.Since(restarted).Round(time.Millisecond), attempts)
	if !signerReview(ctx, t, kube, t5) {
		t.Fatal("TokenReview rejects a token minted after the signer restarted")
	}
}

// assertSignerToken checks a token's header byte for byte and its signature with go-jose.
func assertSignerToken(t *testing.T, token, kid string, pub crypto.PublicKey) {
	t.Helper()
	header, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		t.Fatalf("header segment: %v", err)
	}
	if want := `{"alg":"RS256","kid":"` + kid + `","typ":"JWT"}`; string(raw) != want {
		t.Fatalf("token header %s, want %s", raw, want)
	}
	obj, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obj.Verify(pub); err != nil {
		t.Fatalf("go-jose: token does not verify with key %s: %v", kid, err)
	}
}

// mintUntilKID mints tokens until one carries kid, and returns it with the number of attempts.
// Failed mints are retried (a restarting signer) until limit.
func mintUntilKID(ctx context.Context, t *testing.T, kube kubernetes.Interface, kid string, limit time.Duration) (string, int) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var last string
	for attempt := 1; ; attempt++ {
		tok, err := signerMint(ctx, kube, 5*time.Second)
		if err == nil && kidOf(t, tok) == kid {
			return tok, attempt
		}
		if err != nil {
			last = err.Error()
		} else {
			last = "kid " + kidOf(t, tok)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no token with kid %s within %s (%d attempts; last: %.200s)", kid, limit, attempt, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAPIServerJWKS polls kube-apiserver's JWKS until cond holds.
func waitAPIServerJWKS(ctx context.Context, t *testing.T, kube kubernetes.Interface, limit time.Duration, what string, cond func(map[string]jwk) bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		m := apiserverJWKS(ctx, t, kube)
		if cond(m) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; kube-apiserver publishes %v", what, limit, slices.Sorted(maps.Keys(m)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testLogWriter sends the signer's log lines to the test log.
type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
