package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/admin"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
)

const (
	stateSecret = "issuer-lifecycle"
	leaseName   = "kube-oidc-issuer"
	// adminStaticToken is what the tests put in --admin-token-file.
	adminStaticToken = "e2e-static-admin-token-0123456789"
)

// replica is one running issuer with its admin listener.
type replica struct {
	name      string
	issuer    *harness.Issuer
	cfg       harness.IssuerConfig
	adminPort int
	adminURL  string
	publicURL string // the issuer path on this replica's own port
}

// lifecycleArgs are the serve flags of a replica with the key lifecycle; extra come last.
func lifecycleArgs(t *testing.T, s *stack, extra ...string) []string {
	t.Helper()
	tokenFile := filepath.Join(s.dir, "admin.token")
	if _, err := os.Stat(tokenFile); err != nil {
		writeFile(t, tokenFile, []byte(adminStaticToken+"\n"))
	}
	return append([]string{
		"--state-secret", testNamespace + "/" + stateSecret,
		"--admin-token-file", tokenFile,
	}, extra...)
}

// startReplica starts an issuer process like s's with args instead of the stack's extra issuer
// args, and an admin listener. The first replica takes over the stack's own ports (stop s.issuer
// first), so the issuer URL — what tokens carry and go-oidc fetches — points at it; others get
// ports of their own. A non-empty kubeconfig replaces the stack's admin one.
func startReplica(ctx context.Context, t *testing.T, s *stack, name string, first bool, kubeconfig string, args []string) *replica {
	t.Helper()
	ports := freePorts(t, 3)
	cfg := s.issuerCfg
	if first {
		ports[0], ports[1] = cfg.PublicPort, cfg.InternalPort
	}
	base := slices.Clone(cfg.Args[:10]) // --issuer-url, --secret, --kubeconfig, --tls-cert-file, --tls-key-file
	if kubeconfig != "" {
		base[5] = kubeconfig
	}
	cfg.Args = append(append(base, "--admin-listen", "127.0.0.1:"+strconv.Itoa(ports[2])), args...)
	cfg.PublicPort, cfg.InternalPort = ports[0], ports[1]
	cfg.LogPath = filepath.Join(s.dir, "issuer-"+name+".log")
	r := &replica{name: name, cfg: cfg, adminPort: ports[2],
		adminURL:  "https://127.0.0.1:" + strconv.Itoa(ports[2]),
		publicURL: strings.Replace(s.issuerURL, s.issuer.PublicAddr, "127.0.0.1:"+strconv.Itoa(ports[0]), 1)}
	r.start(ctx, t)
	return r
}

func (r *replica) start(ctx context.Context, t *testing.T) {
	t.Helper()
	iss, err := harness.StartIssuer(ctx, r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.issuer = iss
	t.Cleanup(func() {
		if err := iss.Stop(); err != nil {
			t.Errorf("replica %s did not stop cleanly: %v\n%s", r.name, err, iss.LogTail(3000))
		}
		if t.Failed() {
			t.Logf("replica %s log:\n%s", r.name, iss.LogTail(8000))
		}
	})
	if err := iss.WaitReady(ctx, readyTimeout); err != nil {
		t.Fatal(err)
	}
}

// restart stops the replica gracefully and starts it again with the same configuration.
func (r *replica) restart(ctx context.Context, t *testing.T) {
	t.Helper()
	if err := r.issuer.Stop(); err != nil {
		t.Fatalf("stopping replica %s: %v", r.name, err)
	}
	r.start(ctx, t)
}

func (r *replica) client(t *testing.T, s *stack, token string) *admin.Client {
	t.Helper()
	c, err := admin.NewClient(r.adminURL, s.relying, token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// jwks fetches this replica's JWKS and returns its kids; it fails the test on anything but a valid
// JWKS.
func (r *replica) jwks(ctx context.Context, t *testing.T, s *stack) []string {
	t.Helper()
	code, body, err := fetch(ctx, s.relying, r.publicURL+"/openid/v1/jwks")
	if err != nil || code != http.StatusOK {
		t.Fatalf("replica %s JWKS: %d %v %s", r.name, code, err, body)
	}
	kids, err := validJWKS(body)
	if err != nil {
		t.Fatalf("replica %s JWKS: %v", r.name, err)
	}
	return kids
}

// waitKIDs polls the replica's JWKS until cond holds and returns how long it took.
func (r *replica) waitKIDs(ctx context.Context, t *testing.T, s *stack, limit time.Duration, what string, cond func([]string) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		kids := r.jwks(ctx, t, s)
		if cond(kids) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("replica %s: %s not within %s; JWKS has %v", r.name, what, limit, kids)
		}
		time.Sleep(convergePeriod)
	}
}

// leaderStatus reads the replica's /readyz "leader" check.
func (r *replica) leaderStatus(ctx context.Context) (bool, error) {
	code, body, err := fetch(ctx, http.DefaultClient, r.issuer.InternalURL+"/readyz")
	if err != nil {
		return false, err
	}
	var d struct {
		Checks struct {
			Leader struct {
				Leader bool `json:"leader"`
			} `json:"leader"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(body, &d); err != nil {
		return false, fmt.Errorf("/readyz %d: %w: %s", code, err, body)
	}
	return d.Checks.Leader.Leader, nil
}

func fetch(ctx context.Context, c *http.Client, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// validJWKS parses body as a JWKS the way a relying party does (go-jose) and returns its kids. Every
// key must be a valid public signing key with a kid and an algorithm.
func validJWKS(body []byte) ([]string, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS: %w", err)
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("empty JWKS")
	}
	kids := make([]string, 0, len(set.Keys))
	for _, k := range set.Keys {
		if !k.Valid() || !k.IsPublic() || k.KeyID == "" || k.Algorithm == "" || k.Use != "sig" {
			return nil, fmt.Errorf("invalid key %q in JWKS", k.KeyID)
		}
		kids = append(kids, k.KeyID)
	}
	return kids, nil
}

// loadLoop fetches a JWKS URL continuously and checks every answer: 2xx, a valid JWKS, containing
// the key that is active at that moment.
type loadLoop struct {
	requests, non2xx, invalid, missing, transport atomic.Int64
	active                                        atomic.Pointer[string]
	firstProblem                                  atomic.Pointer[string]
	stop                                          context.CancelFunc
	wg                                            sync.WaitGroup
}

func startLoadLoop(t *testing.T, client *http.Client, url, activeKID string, workers int) *loadLoop {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &loadLoop{stop: cancel}
	l.setActive(activeKID)
	problem := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		l.firstProblem.CompareAndSwap(nil, &msg)
	}
	for range workers {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				want := *l.active.Load()
				code, body, err := fetch(ctx, client, url)
				if ctx.Err() != nil {
					return
				}
				l.requests.Add(1)
				switch {
				case err != nil:
					l.transport.Add(1)
					problem("transport error: %v", err)
				case code < 200 || code > 299:
					l.non2xx.Add(1)
					problem("status %d: %s", code, body)
				default:
					kids, err := validJWKS(body)
					switch {
					case err != nil:
						l.invalid.Add(1)
						problem("%v: %s", err, body)
					case !slices.Contains(kids, want):
						l.missing.Add(1)
						problem("active key %s missing from %v", want, kids)
					}
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	t.Cleanup(l.finish)
	return l
}

func (l *loadLoop) setActive(kid string) { l.active.Store(&kid) }

func (l *loadLoop) finish() {
	l.stop()
	l.wg.Wait()
}

func (l *loadLoop) check(t *testing.T) {
	t.Helper()
	l.finish()
	t.Logf("JWKS load loop: %d requests, %d non-2xx, %d transport errors, %d invalid bodies, %d without the active key",
		l.requests.Load(), l.non2xx.Load(), l.transport.Load(), l.invalid.Load(), l.missing.Load())
	if p := l.firstProblem.Load(); p != nil {
		t.Errorf("JWKS load loop saw a problem; first: %s", *p)
	}
	if l.requests.Load() == 0 {
		t.Error("the load loop made no request")
	}
}

// signingSecret returns the signing-key Secret's tls.key and tls.crt and the kids they hold.
func (s *stack) signingSecret(ctx context.Context) (tlsKey, tlsCrt []byte, activeKID string, bundle []string) {
	s.t.Helper()
	sec, err := s.kube.CoreV1().Secrets(testNamespace).Get(ctx, testSecret, metav1.GetOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	priv, err := keys.ParsePEM("tls.key", sec.Data["tls.key"])
	if err != nil || len(priv) != 1 {
		s.t.Fatalf("tls.key: %v", err)
	}
	pubs, err := keys.ParsePEM("tls.crt", sec.Data["tls.crt"])
	if err != nil {
		s.t.Fatalf("tls.crt: %v", err)
	}
	for _, p := range pubs {
		bundle = append(bundle, p.KeyID())
	}
	return sec.Data["tls.key"], sec.Data["tls.crt"], priv[0].KeyID(), bundle
}

// restartAPIServerFromSecret does what an operator does after a promote (or after the bundle
// changed): restart kube-apiserver with the signing-key Secret's contents — tls.key signs, tls.crt
// (the verification bundle) verifies.
func (s *stack) restartAPIServerFromSecret(ctx context.Context) {
	s.t.Helper()
	tlsKey, tlsCrt, _, _ := s.signingSecret(ctx)
	if err := s.cluster.RestartAPIServer(ctx, func(c *testclusterConfig) {
		c.SigningKeyPEM = tlsKey
		c.VerificationKeysPEM = [][]byte{tlsCrt}
	}); err != nil {
		s.t.Fatal(err)
	}
}

// tokenReview asks the real kube-apiserver whether it accepts token.
func (s *stack) tokenReview(ctx context.Context, token string) bool {
	s.t.Helper()
	tr, err := s.kube.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{stsAudience}},
	}, metav1.CreateOptions{})
	if err != nil {
		s.t.Fatalf("TokenReview: %v", err)
	}
	return tr.Status.Authenticated
}

// readState reads the lifecycle state document straight from its Secret.
func (s *stack) readState(ctx context.Context) *lifecycle.State {
	s.t.Helper()
	sec, err := s.kube.CoreV1().Secrets(testNamespace).Get(ctx, stateSecret, metav1.GetOptions{})
	if err != nil {
		return &lifecycle.State{}
	}
	st, err := lifecycle.ParseDocument(sec.Data[lifecycle.DataKey])
	if err != nil {
		s.t.Fatalf("state document: %v", err)
	}
	return st
}

// waitState polls the state Secret until cond holds; it returns how long that took.
func (s *stack) waitState(ctx context.Context, limit time.Duration, what string, cond func(*lifecycle.State) bool) time.Duration {
	s.t.Helper()
	start := time.Now()
	for {
		st := s.readState(ctx)
		if cond(st) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			s.t.Fatalf("state: %s not within %s; state has %v", what, limit, st.Keys)
		}
		time.Sleep(convergePeriod)
	}
}

func phaseIn(st *lifecycle.State, kid string) keys.Phase {
	r, ok := st.Lookup(kid)
	if !ok {
		return "gone"
	}
	return r.Phase
}

// serviceAccountKubeconfig creates a service account and writes a kubeconfig that authenticates as
// it with a one-hour token from the TokenRequest API.
func (s *stack) serviceAccountKubeconfig(ctx context.Context, name string) (path, token string) {
	s.t.Helper()
	if _, err := s.kube.CoreV1().ServiceAccounts(testNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
	tr, err := s.kube.CoreV1().ServiceAccounts(testNamespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	kc := clientcmdv1.Config{
		APIVersion: "v1", Kind: "Config", CurrentContext: name,
		Clusters:  []clientcmdv1.NamedCluster{{Name: "c", Cluster: clientcmdv1.Cluster{Server: s.cluster.URL(), CertificateAuthorityData: s.cluster.CACertPEM()}}},
		AuthInfos: []clientcmdv1.NamedAuthInfo{{Name: name, AuthInfo: clientcmdv1.AuthInfo{Token: tr.Status.Token}}},
		Contexts:  []clientcmdv1.NamedContext{{Name: name, Context: clientcmdv1.Context{Cluster: "c", AuthInfo: name}}},
	}
	b, err := json.Marshal(kc)
	if err != nil {
		s.t.Fatal(err)
	}
	path = filepath.Join(s.dir, name+".kubeconfig")
	writeFile(s.t, path, b)
	return path, tr.Status.Token
}

// serviceAccountToken mints a 10-minute token of an existing service account for audiences (the
// API server's own when none).
func (s *stack) serviceAccountToken(ctx context.Context, sa string, audiences ...string) string {
	s.t.Helper()
	tr, err := s.kube.CoreV1().ServiceAccounts(testNamespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: ptr(int64(600))},
	}, metav1.CreateOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	return tr.Status.Token
}

// grantIssuerRBAC gives the issuer's service account exactly what the README documents: read and
// update the signing-key Secret and the (pre-created) state Secret by name, its Lease, and
// TokenReview/SubjectAccessReview through system:auth-delegator.
func (s *stack) grantIssuerRBAC(ctx context.Context, sa string) {
	s.t.Helper()
	rbac := s.kube.RbacV1()
	_, err := rbac.Roles(testNamespace).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-oidc-issuer"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{testSecret, stateSecret}, Verbs: []string{"get", "list", "watch", "update"}},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{leaseName}, Verbs: []string{"get", "update"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: testNamespace}}
	if _, err := rbac.RoleBindings(testNamespace).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-oidc-issuer"}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "kube-oidc-issuer"},
	}, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-oidc-issuer-auth-delegator"}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
	}, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
	// create cannot be limited to a name: the state Secret is created ahead, empty.
	if _, err := s.kube.CoreV1().Secrets(testNamespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: stateSecret}}, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
}

// grantAdminAPI binds a service account to a ClusterRole for the admin API's non-resource URLs.
func (s *stack) grantAdminAPI(ctx context.Context, sa string, verbs ...string) {
	s.t.Helper()
	rbac := s.kube.RbacV1()
	name := "kube-oidc-issuer-keys-" + sa
	if _, err := rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{"/admin/v1/keys", "/admin/v1/keys/*"}, Verbs: verbs}},
	}, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: testNamespace}},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
	}, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
}
