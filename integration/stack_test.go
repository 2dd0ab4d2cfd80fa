package integration

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
)

const (
	testNamespace  = "issuer-e2e"
	testSecret     = "workload-cluster-sa" // Cluster API / EKS Anywhere: <cluster>-sa
	testSA         = "workload"
	stsAudience    = "sts.amazonaws.com"
	readyTimeout   = 30 * time.Second
	convergePeriod = 20 * time.Millisecond
)

// signingKey is a service-account key pair in PEM.
type signingKey struct {
	name    string
	private []byte
	public  []byte
}

func (k signingKey) kid(t *testing.T) string {
	t.Helper()
	b, _ := pem.Decode(k.public)
	if b == nil {
		t.Fatalf("key %s: no PEM", k.name)
	}
	sum := sha256.Sum256(b.Bytes)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func newRSAKey(t *testing.T, bits int) signingKey {
	t.Helper()
	priv, pub, err := pki.GenerateRSAKeyPEM(bits)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{name: "rsa" + strconv.Itoa(bits), private: priv, public: pub}
}

// stack is one real kube-apiserver + etcd and one kube-oidc-issuer process serving its issuer over
// TLS, all on 127.0.0.1, torn down by t.Cleanup even when the test fails.
type stack struct {
	t         *testing.T
	dir       string
	issuerURL string
	cluster   *testcluster.Cluster
	kube      kubernetes.Interface
	issuer    *harness.Issuer
	relying   *http.Client // trusts only the test CA
	caPEM     []byte
	issuerCfg harness.IssuerConfig
}

type stackOptions struct {
	pathPrefix string     // "" or "/cluster-a"
	signing    signingKey // kube-apiserver signs with it; the Secret holds it in Cluster API layout
	// secretBundle, when set, replaces the Secret's tls.crt (a verification bundle).
	secretBundle []byte
	extraVerify  [][]byte // extra --service-account-key-file for kube-apiserver
	issuerArgs   []string
	noSecret     bool // start the issuer before the Secret exists
}

func newStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	skipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()

	publicPort, internalPort := freePortPair(t)
	issuerURL := fmt.Sprintf("https://127.0.0.1:%d%s", publicPort, o.pathPrefix)

	ca, err := pki.NewCA("kube-oidc-issuer e2e CA")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, relying := issuerTLS(t, ca, dir)

	start := time.Now()
	cluster, kube := startCluster(ctx, t, dir, issuerURL, o.signing.private, o.extraVerify)
	t.Logf("kube-apiserver + etcd up in %s", time.Since(start).Round(time.Millisecond))
	s := &stack{t: t, dir: dir, issuerURL: issuerURL, cluster: cluster, kube: kube, relying: relying, caPEM: ca.CertPEM()}
	s.createNamespaceAndSA(ctx)
	if !o.noSecret {
		bundle := o.secretBundle
		if bundle == nil {
			bundle = o.signing.public
		}
		s.writeSecret(ctx, map[string][]byte{"tls.crt": bundle, "tls.key": o.signing.private})
	}

	s.issuerCfg = harness.IssuerConfig{
		Binary: shared.issuerBin,
		Args: append([]string{
			"--issuer-url", issuerURL,
			"--secret", testNamespace + "/" + testSecret,
			"--kubeconfig", cluster.KubeconfigPath(),
			"--tls-cert-file", certFile,
			"--tls-key-file", keyFile,
		}, o.issuerArgs...),
		PublicPort:   publicPort,
		InternalPort: internalPort,
		LogPath:      filepath.Join(dir, "issuer.log"),
	}
	s.startIssuer(ctx)
	if !o.noSecret {
		if err := s.issuer.WaitReady(ctx, readyTimeout); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *stack) startIssuer(ctx context.Context) {
	s.t.Helper()
	issuer, err := harness.StartIssuer(ctx, s.issuerCfg)
	if err != nil {
		s.t.Fatal(err)
	}
	s.issuer = issuer
	s.t.Cleanup(func() {
		if err := issuer.Stop(); err != nil {
			s.t.Errorf("kube-oidc-issuer did not stop cleanly on SIGTERM: %v\n%s", err, issuer.LogTail(3000))
		}
		if s.t.Failed() {
			s.t.Logf("kube-oidc-issuer log:\n%s", issuer.LogTail(6000))
		}
	})
}

func (s *stack) createNamespaceAndSA(ctx context.Context) {
	s.t.Helper()
	_, err := s.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}, metav1.CreateOptions{})
	if err != nil {
		s.t.Fatalf("creating namespace: %v", err)
	}
	_, err = s.kube.CoreV1().ServiceAccounts(testNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: testSA}}, metav1.CreateOptions{})
	if err != nil {
		s.t.Fatalf("creating service account: %v", err)
	}
}

// writeSecret creates or replaces the signing-key Secret's data.
func (s *stack) writeSecret(ctx context.Context, data map[string][]byte) {
	s.t.Helper()
	secrets := s.kube.CoreV1().Secrets(testNamespace)
	sec, err := secrets.Get(ctx, testSecret, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: testSecret},
			Type:       clusterAPISecretType,
			Data:       data,
		}, metav1.CreateOptions{})
	case err == nil:
		sec.Data = data
		_, err = secrets.Update(ctx, sec, metav1.UpdateOptions{})
	}
	if err != nil {
		s.t.Fatalf("writing the signing-key Secret: %v", err)
	}
}

// mintToken asks the real kube-apiserver for a service-account token (TokenRequest API).
func (s *stack) mintToken(ctx context.Context) string {
	s.t.Helper()
	tr, err := s.kube.CoreV1().ServiceAccounts(testNamespace).CreateToken(ctx, testSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{stsAudience}, ExpirationSeconds: ptr(int64(3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		s.t.Fatalf("TokenRequest: %v", err)
	}
	return tr.Status.Token
}

// verify checks a token the way a relying party does: discovery from the issuer URL, JWKS from its
// jwks_uri, signature, iss and aud — over TLS trusting only the test CA.
func (s *stack) verify(ctx context.Context, token string) (*oidc.IDToken, error) {
	ctx = oidc.ClientContext(ctx, s.relying)
	provider, err := oidc.NewProvider(ctx, s.issuerURL)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	return provider.Verifier(&oidc.Config{ClientID: stsAudience}).Verify(ctx, token)
}

func (s *stack) mustVerify(ctx context.Context, token string) {
	s.t.Helper()
	idt, err := s.verify(ctx, token)
	if err != nil {
		s.t.Fatalf("go-oidc rejected a token minted by kube-apiserver: %v", err)
	}
	if want := "system:serviceaccount:" + testNamespace + ":" + testSA; idt.Subject != want {
		s.t.Fatalf("sub = %q, want %q", idt.Subject, want)
	}
}

// get fetches a path below the issuer URL from the issuer's public listener.
func (s *stack) get(ctx context.Context, path string) (*http.Response, []byte) {
	s.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.issuerURL+path, nil)
	resp, err := s.relying.Do(req)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp, body
}

// jwk is the public part of a JWK as both servers publish it.
type jwk struct {
	Use string `json:"use"`
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
}

func parseJWKS(t *testing.T, body []byte) map[string]jwk {
	t.Helper()
	var doc struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("JWKS does not parse: %v: %s", err, body)
	}
	out := make(map[string]jwk, len(doc.Keys))
	for _, k := range doc.Keys {
		out[k.Kid] = k
	}
	return out
}

// ourJWKS returns the issuer's JWKS, keyed by kid.
func (s *stack) ourJWKS(ctx context.Context) (map[string]jwk, []byte) {
	s.t.Helper()
	resp, body := s.get(ctx, "/openid/v1/jwks")
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("GET JWKS: %d %s", resp.StatusCode, body)
	}
	return parseJWKS(s.t, body), body
}

// apiserverGet reads one of kube-apiserver's own documents as the admin.
func (s *stack) apiserverGet(ctx context.Context, path string) []byte {
	s.t.Helper()
	body, err := s.kube.Discovery().RESTClient().Get().AbsPath(path).DoRaw(ctx)
	if err != nil {
		s.t.Fatalf("kube-apiserver GET %s: %v", path, err)
	}
	return body
}

// assertSameKeysAsAPIServer compares our JWKS with kube-apiserver's /openid/v1/jwks key for key.
func (s *stack) assertSameKeysAsAPIServer(ctx context.Context) {
	s.t.Helper()
	ours, _ := s.ourJWKS(ctx)
	theirs := parseJWKS(s.t, s.apiserverGet(ctx, "/openid/v1/jwks"))
	if len(ours) != len(theirs) {
		s.t.Fatalf("issuer publishes %d keys, kube-apiserver %d:\nours:   %v\ntheirs: %v", len(ours), len(theirs), ours, theirs)
	}
	for kid, want := range theirs {
		got, ok := ours[kid]
		if !ok {
			s.t.Fatalf("kube-apiserver key %s missing from our JWKS (ours: %v)", kid, keysOf(ours))
		}
		if got != want {
			s.t.Fatalf("key %s differs:\nours:   %+v\ntheirs: %+v", kid, got, want)
		}
	}
}

// waitJWKS polls the issuer's JWKS until cond holds and returns how long it took.
func (s *stack) waitJWKS(ctx context.Context, timeout time.Duration, cond func(map[string]jwk) bool) time.Duration {
	s.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ours, _ := s.ourJWKS(ctx)
		if cond(ours) {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("JWKS did not converge within %s; has %v", timeout, keysOf(ours))
		}
		time.Sleep(convergePeriod)
	}
}

// readyz returns the issuer's readiness status code and decoded details.
func (s *stack) readyz(ctx context.Context) (int, map[string]any) {
	s.t.Helper()
	code, body, err := fetch(ctx, http.DefaultClient, s.issuer.InternalURL+"/readyz")
	if err != nil {
		s.t.Fatal(err)
	}
	var details map[string]any
	if err := json.Unmarshal(body, &details); err != nil {
		s.t.Fatalf("/readyz body is not JSON: %v: %s", err, body)
	}
	return code, details
}

func (s *stack) metrics(ctx context.Context) string {
	s.t.Helper()
	_, b, err := fetch(ctx, http.DefaultClient, s.issuer.InternalURL+"/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	return string(b)
}

func keysOf(m map[string]jwk) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustContain(t *testing.T, haystack, needle string) {
	t.Helper()
	if !strings.Contains(haystack, needle) {
		t.Fatalf("missing %q in:\n%s", needle, haystack)
	}
}

// testclusterConfig is the configuration RestartAPIServer lets a test change.
type testclusterConfig = testcluster.Config

func deleteOpts() metav1.DeleteOptions { return metav1.DeleteOptions{} }

// kidOf returns the kid in a JWT's header.
func kidOf(t *testing.T, token string) string {
	t.Helper()
	header, _, ok := strings.Cut(token, ".")
	if !ok {
		t.Fatalf("not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h.Kid
}

// sourceErrorsAtLeast reads kube_oidc_issuer_key_source_errors_total for the test Secret.
func sourceErrorsAtLeast(metrics string, n int) bool {
	prefix := `kube_oidc_issuer_key_source_errors_total{source="secret/` + testNamespace + "/" + testSecret + `"} `
	for _, line := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			return err == nil && f >= float64(n)
		}
	}
	return false
}

// firstSource digs the first key source's status out of /readyz details.
func firstSource(t *testing.T, details map[string]any) map[string]any {
	t.Helper()
	checks, _ := details["checks"].(map[string]any)
	sources, _ := checks["keys"].([]any)
	if len(sources) == 0 {
		t.Fatalf("/readyz has no key source details: %v", details)
	}
	src, _ := sources[0].(map[string]any)
	return src
}

// clusterAPISecretType is the type Cluster API gives <cluster>-sa; kubernetes.io/tls would make the
// API server demand a certificate in tls.crt, which holds a public key here.
const clusterAPISecretType corev1.SecretType = "cluster.x-k8s.io/secret"

// freePorts returns n distinct free loopback ports for processes the test starts.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		p, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	return ports
}

// freePortPair returns ports for an issuer's public and internal listeners.
func freePortPair(t *testing.T) (public, internal int) {
	t.Helper()
	p := freePorts(t, 2)
	return p[0], p[1]
}

// startCluster starts etcd and a kube-apiserver whose tokens carry issuerURL, signed with
// signingKeyPEM, and stops them when the test ends.
func startCluster(ctx context.Context, t *testing.T, dir, issuerURL string, signingKeyPEM []byte, extraVerificationKeysPEM [][]byte) (*testcluster.Cluster, *kubernetes.Clientset) {
	t.Helper()
	cluster, err := testcluster.Start(ctx, testcluster.Config{
		BinDir:                shared.binDir,
		WorkDir:               filepath.Join(dir, "cluster"),
		ServiceAccountIssuers: []string{issuerURL},
		ServiceAccountJWKSURI: issuerURL + "/openid/v1/jwks",
		SigningKeyPEM:         signingKeyPEM,
		VerificationKeysPEM:   extraVerificationKeysPEM,
	})
	if err != nil {
		t.Fatal(err)
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
	return cluster, kube
}

// issuerTLS writes a 127.0.0.1 serving certificate issued by ca into dir for the issuer, and
// returns it with an HTTP client that, like a relying party configured with the CA, trusts only ca.
func issuerTLS(t *testing.T, ca *pki.CA, dir string) (certFile, keyFile string, relying *http.Client) {
	t.Helper()
	leaf, err := ca.IssueServer("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err = leaf.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	relying, err = harness.HTTPClient(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, relying
}

// startServe runs `kube-oidc-issuer serve` as cfg says and waits until it is ready; it is stopped
// (SIGTERM, which it must obey) when the test ends, and its log shown if the test failed. Unset
// fields default: the race-enabled binary, free ports, a log file in a new temporary directory.
func startServe(ctx context.Context, t *testing.T, cfg harness.IssuerConfig) *harness.Issuer {
	t.Helper()
	if cfg.Binary == "" {
		cfg.Binary = shared.issuerBin
	}
	if cfg.PublicPort == 0 || cfg.InternalPort == 0 {
		cfg.PublicPort, cfg.InternalPort = freePortPair(t)
	}
	if cfg.LogPath == "" {
		cfg.LogPath = filepath.Join(t.TempDir(), "issuer.log")
	}
	issuer, err := harness.StartIssuer(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := issuer.Stop(); err != nil {
			t.Errorf("kube-oidc-issuer serve did not stop cleanly on SIGTERM: %v", err)
		}
		if t.Failed() {
			t.Logf("kube-oidc-issuer serve log (tail):\n%s", issuer.LogTail(6000))
		}
	})
	if err := issuer.WaitReady(ctx, readyTimeout); err != nil {
		t.Fatal(err)
	}
	return issuer
}
