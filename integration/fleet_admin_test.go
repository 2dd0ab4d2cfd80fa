package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/admin"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys/kubesource"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
)

// TestFleetAdminAPI proves the fleet's per-cluster key lifecycle through its admin API against a
// real management kube-apiserver holding two Cluster API clusters, team-a/alpha and team-b/beta:
// a key staged for alpha through `keys --cluster` is served in alpha's JWKS within seconds and
// recorded in alpha's own labelled state Secret, while beta's JWKS stays byte for byte the same;
// promote writes it into team-a/alpha-sa (signing key, first in the bundle). A service account
// granted alpha's paths alone (RBAC through SubjectAccessReview on the path) reaches alpha and
// nothing else: beta is 403, and path spellings that would cross from alpha's granted prefix to
// beta (dot segments, percent-encoded slashes) are 404 and change nothing. An unknown cluster is
// 404, a missing token 401 with a body that reveals nothing, and the single-cluster route 404.
func TestFleetAdminAPI(t *testing.T) {
	skipIfShort(t)
	testStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()

	ports := freePorts(t, 3)
	publicPort, internalPort, adminPort := ports[0], ports[1], ports[2]
	base := fmt.Sprintf("https://127.0.0.1:%d", publicPort)
	ca, err := pki.NewCA("kube-oidc-issuer fleet admin e2e CA")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, relying := issuerTLS(t, ca, dir)
	caFile := filepath.Join(dir, "ca.crt")
	writeFile(t, caFile, ca.CertPEM())
	tokenFile := filepath.Join(dir, "admin.token")
	writeFile(t, tokenFile, []byte(adminStaticToken+"\n"))

	keyA := newRSAKey(t, 2048) // alpha's signing key in team-a/alpha-sa
	keyB := newFleetECKey(t)   // beta's in team-b/beta-sa
	keyM := newRSAKey(t, 2048) // the management cluster's own
	kidA, kidB := keyA.kid(t), keyB.kid(t)

	// 1. The management cluster, two clusters' Secrets, an operator of alpha with RBAC for alpha.
	start := time.Now()
	mgmtCluster := startFleetClusters(ctx, t, []testcluster.Config{{
		BinDir: shared.binDir, WorkDir: filepath.Join(dir, "management"),
		ServiceAccountIssuers: []string{"https://management.kube-oidc-issuer.test"},
		SigningKeyPEM:         keyM.private,
	}})[0]
	mgmt := mgmtCluster.kube
	t.Logf("management kube-apiserver up in %s", time.Since(start).Round(time.Millisecond))
	for _, ns := range []string{"team-a", "team-b"} {
		if _, err := mgmt.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating namespace %s: %v", ns, err)
		}
	}
	for _, s := range []*corev1.Secret{capiKeySecret("team-a", "alpha", keyA), capiKeySecret("team-b", "beta", keyB)} {
		if _, err := mgmt.CoreV1().Secrets(s.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating Secret %s/%s: %v", s.Namespace, s.Name, err)
		}
	}
	operatorToken := grantFleetClusterAdmin(ctx, t, mgmt, "team-a", "alpha-operator", "team-a", "alpha", "get", "post")

	f := &fleetEnv{t: t, base: base, relying: relying, caPEM: ca.CertPEM()}
	start = time.Now()
	f.iss = startServe(ctx, t, harness.IssuerConfig{
		Args: []string{
			"--fleet",
			"--issuer-url-template", base + "/clusters/{cluster}",
			"--kubeconfig", mgmtCluster.cluster.KubeconfigPath(),
			"--tls-cert-file", certFile,
			"--tls-key-file", keyFile,
			"--admin-listen", "127.0.0.1:" + strconv.Itoa(adminPort),
			"--admin-token-file", tokenFile,
			// Long: promote without --force is refused, which proves the lead applies per cluster.
			"--publish-lead", "10m",
		},
		PublicPort:   publicPort,
		InternalPort: internalPort,
		LogPath:      filepath.Join(dir, "issuer.log"),
	})
	t.Logf("fleet issuer ready in %s", time.Since(start).Round(time.Millisecond))
	a := &fleetAdmin{t: t, url: "https://127.0.0.1:" + strconv.Itoa(adminPort), caFile: caFile, caPEM: ca.CertPEM()}

	alphaJWKS0 := f.mustJWKS(ctx, "alpha", kidA)
	betaJWKS := f.mustJWKS(ctx, "beta", kidB)
	betaSA := getSecret(ctx, t, mgmt, "team-b", "beta-sa")
	betaUnchanged := func(when string) {
		t.Helper()
		if got := f.mustGet(ctx, "beta", "/openid/v1/jwks"); !bytes.Equal(got, betaJWKS) {
			t.Fatalf("beta's JWKS changed %s:\nbefore: %s\nafter:  %s", when, betaJWKS, got)
		}
		if sec := getSecret(ctx, t, mgmt, "team-b", "beta-sa"); sec.ResourceVersion != betaSA.ResourceVersion {
			t.Fatalf("team-b/beta-sa was written %s (resourceVersion %s → %s)", when, betaSA.ResourceVersion, sec.ResourceVersion)
		}
		if _, err := mgmt.CoreV1().Secrets("team-b").Get(ctx, "beta"+"-oidc-keys", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("team-b/beta-oidc-keys exists %s (err %v): nothing should have touched beta's lifecycle", when, err)
		}
	}

	// The admin listener answers (it may come up just after /readyz).
	waitFor(t, 10*time.Second, "the admin listener", func() bool {
		_, err := a.client(relying, adminStaticToken).Cluster("team-a", "alpha").List(ctx)
		return err == nil
	})

	// 2. Stage through the CLI with the static token: alpha's JWKS gets the key, beta's does not.
	// A poller started before the CLI records when alpha's JWKS first holds a second key (the CLI
	// returns only after the state Secret is written, so the key may be served before it exits).
	type seen struct {
		at    time.Time
		kids  []string
		polls int
	}
	pollCtx, stopPoll := context.WithTimeout(ctx, 15*time.Second)
	defer stopPoll()
	firstServed := make(chan seen, 1)
	go func() {
		defer close(firstServed)
		for polls := 1; pollCtx.Err() == nil; polls++ {
			if code, body, err := fetch(pollCtx, relying, f.issuerURL("alpha")+"/openid/v1/jwks"); err == nil && code == http.StatusOK {
				if kids, err := validJWKS(body); err == nil && len(kids) > 1 {
					firstServed <- seen{time.Now(), kids, polls}
					return
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	cliStart := time.Now()
	out := a.mustCLI(ctx, "--token-file", tokenFile, "--cluster", "team-a/alpha", "-o", "json", "stage", "--algorithm", "ES256")
	cliDone := time.Now()
	var staged admin.KeyResult
	if err := json.Unmarshal([]byte(out), &staged); err != nil {
		t.Fatalf("keys stage -o json: %v\n%s", err, out)
	}
	kidS := staged.Key.KID
	if staged.Result != "staged" || staged.Key.Phase != "staged" || staged.Key.Algorithm != "ES256" || kidS == "" || kidS == kidA {
		t.Fatalf("keys stage answered %+v", staged)
	}
	served, ok := <-firstServed
	if !ok {
		t.Fatalf("alpha's JWKS never held a second key within 15s of `keys stage`: %s", f.mustGet(ctx, "alpha", "/openid/v1/jwks"))
	}
	if !slices.Equal(served.kids, []string{kidA, kidS}) {
		t.Fatalf("alpha's JWKS after stage: %v, want [%s %s] (active first, then the staged key)", served.kids, kidA, kidS)
	}
	t.Logf("staged key %s (ES256) served in alpha's JWKS %s after `keys stage` was started, %s relative to its exit (the CLI ran %s; poll %d)",
		kidS, served.at.Sub(cliStart).Round(100*time.Microsecond), served.at.Sub(cliDone).Round(100*time.Microsecond),
		cliDone.Sub(cliStart).Round(100*time.Microsecond), served.polls)
	if d := served.at.Sub(cliDone); d > 3*time.Second {
		t.Errorf("the staged key was served %s after `keys stage` returned, want a few seconds at most", d)
	}
	betaUnchanged("after staging a key for alpha")
	state := getSecret(ctx, t, mgmt, "team-a", "alpha-oidc-keys")
	if got := state.Labels[fleetClusterLabel]; got != "alpha" {
		t.Errorf("team-a/alpha-oidc-keys label %s = %q, want alpha (labels %v)", fleetClusterLabel, got, state.Labels)
	}
	if st := parseStateSecret(t, state); phaseIn(st, kidS) != keys.PhaseStaged {
		t.Errorf("alpha's state: %s is %s, want staged", kidS, phaseIn(st, kidS))
	}
	if sec := getSecret(ctx, t, mgmt, "team-a", "alpha-sa"); !bytes.Equal(sec.Data["tls.key"], keyA.private) || !bytes.Equal(sec.Data["tls.crt"], keyA.public) {
		t.Errorf("team-a/alpha-sa changed on stage")
	}

	// 3. Promote: refused inside the publish lead, then forced; alpha-sa holds the staged key.
	// ("--" before a KID: a base64url kid may begin with '-', which cobra takes for a flag.)
	out, err = a.cli(ctx, "--token-file", tokenFile, "--cluster", "team-a/alpha", "promote", "--", kidS)
	if err == nil || !strings.Contains(out, "409 Conflict") {
		t.Fatalf("keys promote inside the publish lead without --force: %v, want 409\n%s", err, out)
	}
	promoteStart := time.Now()
	out = a.mustCLI(ctx, "--token-file", tokenFile, "--cluster", "team-a/alpha", "-o", "json", "promote", "--force", "--", kidS)
	promotedAt := time.Now()
	var promoted admin.KeyResult
	if err := json.Unmarshal([]byte(out), &promoted); err != nil {
		t.Fatalf("keys promote -o json: %v\n%s", err, out)
	}
	if promoted.Result != "promoted" || promoted.Key.KID != kidS || promoted.Key.Phase != "active" || !promoted.Key.InBundle {
		t.Fatalf("keys promote answered %+v", promoted)
	}
	alphaSA := getSecret(ctx, t, mgmt, "team-a", "alpha-sa")
	priv, err := keys.ParsePEM("tls.key", alphaSA.Data["tls.key"])
	if err != nil || len(priv) != 1 || priv[0].KeyID() != kidS {
		t.Fatalf("team-a/alpha-sa tls.key after promote: %v %v, want the staged key %s", err, priv, kidS)
	}
	bundle, err := keys.ParsePEM("tls.crt", alphaSA.Data["tls.crt"])
	if err != nil {
		t.Fatalf("team-a/alpha-sa tls.crt after promote: %v", err)
	}
	if kids := kidsOfPublic(bundle); !slices.Equal(kids, []string{kidS, kidA}) {
		t.Fatalf("team-a/alpha-sa tls.crt after promote holds %v, want [%s %s] (new first)", kids, kidS, kidA)
	}
	if ks, err := kubesource.KeysFromSecret(alphaSA); err != nil || len(ks) != 2 || ks[0].Public.KeyID() != kidS || ks[0].Phase != keys.PhaseActive || ks[1].Public.KeyID() != kidA {
		t.Fatalf("kubesource.KeysFromSecret(team-a/alpha-sa) after promote: %v %+v", err, ks)
	}
	var alphaKids []string
	waitFor(t, 10*time.Second, "alpha's JWKS [new, old] after promote", func() bool {
		_, body := f.get(ctx, "alpha", "/openid/v1/jwks", "")
		alphaKids, _ = validJWKS(body)
		return slices.Equal(alphaKids, []string{kidS, kidA})
	})
	t.Logf("`keys promote --force` took %s; after it (%s later) alpha's JWKS is %v and team-a/alpha-sa signs with %s",
		promotedAt.Sub(promoteStart).Round(time.Millisecond), time.Since(promotedAt).Round(time.Millisecond), alphaKids, kidS)
	listStart := time.Now()
	out = a.mustCLI(ctx, "--token-file", tokenFile, "--cluster", "team-a/alpha", "list")
	t.Logf("`keys list` took %s", time.Since(listStart).Round(time.Millisecond))
	for _, want := range []string{kidS, kidA, "active", "previous", "team-a/alpha-oidc-keys", "team-a/alpha-sa", "publish lead 10m0s"} {
		mustContain(t, out, want)
	}
	if strings.Contains(out, kidB) {
		t.Fatalf("alpha's list shows beta's key:\n%s", out)
	}
	betaUnchanged("after promoting alpha's key")
	alphaJWKS := f.mustGet(ctx, "alpha", "/openid/v1/jwks")
	if bytes.Equal(alphaJWKS, alphaJWKS0) {
		t.Fatal("alpha's JWKS did not change")
	}

	// 4. RBAC per cluster: alpha-operator may get and post alpha's paths, and nothing else.
	op := []string{"--token", operatorToken}
	waitFor(t, 10*time.Second, "alpha-operator listing alpha", func() bool {
		_, err := a.cli(ctx, append(op, "--cluster", "team-a/alpha", "list")...)
		return err == nil
	})
	out = a.mustCLI(ctx, append(op, "--cluster", "team-a/alpha", "-o", "json", "list")...)
	var list admin.KeyList
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Keys) != 2 || list.StateSecret != "team-a/alpha-oidc-keys" {
		t.Fatalf("alpha-operator's list of alpha: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"list beta", []string{"--cluster", "team-b/beta", "list"}},
		{"stage on beta", []string{"--cluster", "team-b/beta", "stage", "--algorithm", "ES256"}},
		{"promote on beta", []string{"--cluster", "team-b/beta", "promote", "--force", "--", kidB}},
		{"retire on beta", []string{"--cluster", "team-b/beta", "retire", "--force", "--", kidB}},
		{"list an unknown cluster", []string{"--cluster", "team-a/nope", "list"}}, // not its path: 403, not 404
		{"the single-cluster route", []string{"list"}},
	} {
		if out, err := a.cli(ctx, append(op, tc.args...)...); err == nil || !strings.Contains(out, "403 Forbidden") {
			t.Errorf("alpha-operator: %s: %v, want 403\n%s", tc.name, err, out)
		}
	}
	// delete is not granted, on alpha either.
	if status, body, _ := a.raw(ctx, http.MethodDelete, admin.ClusterPath("team-a", "alpha")+"/"+kidA+"?force=true", operatorToken, ""); status != http.StatusForbidden {
		t.Errorf("alpha-operator DELETE on alpha (verb not granted): %d %s, want 403", status, body)
	}
	// post is: stage on alpha (201) and see it served; the static token withdraws it again.
	status, body, _ := a.raw(ctx, http.MethodPost, admin.ClusterPath("team-a", "alpha"), operatorToken, `{"algorithm":"ES256"}`)
	var opStaged admin.KeyResult
	if status != http.StatusCreated || json.Unmarshal(body, &opStaged) != nil || opStaged.Key.Phase != "staged" {
		t.Fatalf("alpha-operator stage on alpha: %d %s, want 201", status, body)
	}
	kidO := opStaged.Key.KID
	waitFor(t, 10*time.Second, "the operator's staged key in alpha's JWKS", func() bool {
		_, body := f.get(ctx, "alpha", "/openid/v1/jwks", "")
		kids, _ := validJWKS(body)
		return slices.Equal(kids, []string{kidS, kidA, kidO}) || slices.Equal(kids, []string{kidS, kidO, kidA})
	})
	if status, body, _ := a.raw(ctx, http.MethodDelete, admin.ClusterPath("team-a", "alpha")+"/"+kidO, operatorToken, ""); status != http.StatusForbidden {
		t.Errorf("alpha-operator withdrawing its staged key (delete not granted): %d %s, want 403", status, body)
	}
	out = a.mustCLI(ctx, "--token-file", tokenFile, "--cluster", "team-a/alpha", "retire", "--", kidO)
	mustContain(t, out, "withdrawn")
	waitFor(t, 10*time.Second, "the withdrawn key gone from alpha's JWKS", func() bool {
		_, body := f.get(ctx, "alpha", "/openid/v1/jwks", "")
		kids, _ := validJWKS(body)
		return slices.Equal(kids, []string{kidS, kidA})
	})

	// Spellings of beta's path under alpha's granted prefix, sent exactly so: 404 for the
	// operator and for the static token alike, and beta is untouched.
	crossing := []string{
		"/admin/v1/clusters/team-a/alpha/keys/../../../team-b/beta/keys",
		"/admin/v1/clusters/team-a/alpha/keys/..%2F..%2F..%2Fteam-b%2Fbeta%2Fkeys",
		"/admin/v1/clusters/team-a/alpha/keys/%2e%2e/%2e%2e/%2e%2e/team-b/beta/keys",
		"/admin/v1/clusters/team-a/alpha/keys%2F..%2F..%2F..%2Fteam-b%2Fbeta%2Fkeys",
		"/admin/v1/clusters/team-b%2Fbeta/keys",
		"/admin/v1/clusters/team-a/alpha/keys/./../../../team-b/beta/keys",
		"/admin/v1/clusters/team-a/alpha/keys//../../../../team-b/beta/keys",
		"/admin/v1/clusters/team-a/alpha/keys/../../../team-b/beta/keys/" + kidB + "/promote?force=true",
		"/admin/v1/clusters/team-a/alpha/keys/" + kidS + "/..%2F..%2F..%2F..%2Fteam-b%2Fbeta%2Fkeys",
	}
	for _, token := range []struct{ who, token string }{{"alpha-operator", operatorToken}, {"static token", adminStaticToken}} {
		for _, p := range crossing {
			for _, m := range []string{http.MethodGet, http.MethodPost} {
				body := ""
				if m == http.MethodPost {
					body = `{"algorithm":"ES256"}`
				}
				if status, resp, _ := a.raw(ctx, m, p, token.token, body); status != http.StatusNotFound {
					t.Errorf("%s: %s %s: %d, want 404: %.300s", token.who, m, p, status, resp)
				}
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	betaUnchanged("after the path-crossing requests")
	if got := f.mustGet(ctx, "alpha", "/openid/v1/jwks"); !bytes.Equal(got, alphaJWKS) {
		t.Fatalf("alpha's JWKS changed after the path-crossing requests:\nbefore: %s\nafter:  %s", alphaJWKS, got)
	}

	// An unknown cluster with the static token: 404.
	out, err = a.cli(ctx, "--token-file", tokenFile, "--cluster", "team-a/nope", "list")
	if err == nil || !strings.Contains(out, "404 NotFound") {
		t.Errorf("static token: list of team-a/nope: %v, want 404\n%s", err, out)
	}
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		if status, body, _ := a.raw(ctx, m, admin.ClusterPath("team-a", "nope"), adminStaticToken, ""); status != http.StatusNotFound {
			t.Errorf("static token: %s team-a/nope: %d %s, want 404", m, status, body)
		}
	}
	// beta lives in team-b: its name under team-a is another, unknown, cluster.
	if status, body, _ := a.raw(ctx, http.MethodGet, admin.ClusterPath("team-a", "beta"), adminStaticToken, ""); status != http.StatusNotFound {
		t.Errorf("static token: GET team-a/beta: %d %s, want 404", status, body)
	}

	// No token (or a bad one): 401, and the body is the same whatever the path, so it reveals
	// nothing about which clusters or routes exist.
	var first []byte
	for _, p := range []string{
		admin.ClusterPath("team-a", "alpha"), admin.ClusterPath("team-b", "beta"), admin.ClusterPath("team-a", "nope"),
		admin.ClusterPath("team-a", "alpha") + "/" + kidS + "/promote", "/admin/v1/keys", "/admin/v1/nothing",
		"/admin/v1/clusters/team-a/alpha/keys/../../../team-b/beta/keys",
	} {
		for _, token := range []string{"", "not-a-token"} {
			status, body, hdr := a.raw(ctx, http.MethodGet, p, token, "")
			if status != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("GET %s with token %q: %d (WWW-Authenticate %q) %s, want 401", p, token, status, hdr.Get("WWW-Authenticate"), body)
				continue
			}
			for _, secret := range []string{"alpha", "beta", "nope", "team-", kidS, kidA, "fleet", "clusters"} {
				if bytes.Contains(body, []byte(secret)) {
					t.Errorf("the 401 body for %s mentions %q: %s", p, secret, body)
				}
			}
			if token == "" {
				if first == nil {
					first = body
					t.Logf("401 body: %s", bytes.TrimSpace(body))
				} else if !bytes.Equal(body, first) {
					t.Errorf("the 401 body for %s differs from the first:\n%s\n%s", p, body, first)
				}
			}
		}
	}

	// 5. The single-cluster route is not served in fleet mode.
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		status, body, _ := a.raw(ctx, m, "/admin/v1/keys", adminStaticToken, "")
		if status != http.StatusNotFound || !bytes.Contains(body, []byte("/admin/v1/clusters/NAMESPACE/CLUSTER/keys")) {
			t.Errorf("static token: %s /admin/v1/keys: %d %s, want 404 naming the cluster routes", m, status, body)
		}
	}
	if out, err := a.cli(ctx, "--token-file", tokenFile, "list"); err == nil || !strings.Contains(out, "404 NotFound") {
		t.Errorf("keys list without --cluster: %v, want 404\n%s", err, out)
	}

	// The audit log: who was denied what, for which cluster; no bearer token.
	log := f.iss.Log()
	for _, want := range [][]string{
		{`user=system:serviceaccount:team-a:alpha-operator`, `action=list method=GET path=/admin/v1/clusters/team-b/beta/keys status=403 outcome=denied`, `namespace=team-b cluster=beta`},
		{`user=system:serviceaccount:team-a:alpha-operator`, `action=stage method=POST path=/admin/v1/clusters/team-a/alpha/keys status=201 outcome=ok`, `namespace=team-a cluster=alpha kid=` + kidO},
		{`user=admin-token-file`, `via=token-file action=promote method=POST path=/admin/v1/clusters/team-a/alpha/keys/` + kidS + `/promote status=200 outcome=ok`, `force=true`},
	} {
		if !slices.ContainsFunc(strings.Split(log, "\n"), func(line string) bool {
			return !slices.ContainsFunc(want, func(part string) bool { return !strings.Contains(line, part) })
		}) {
			t.Errorf("no audit line with all of %q", want)
		}
	}
	for _, secret := range []string{operatorToken, adminStaticToken, "not-a-token"} {
		if strings.Contains(log, secret) {
			t.Fatal("a bearer token is in the issuer's log")
		}
	}
	betaUnchanged("at the end")
	t.Logf("TestFleetAdminAPI took %s", time.Since(testStart).Round(time.Millisecond))
}

// fleetAdmin is the fleet issuer's admin listener as an operator reaches it.
type fleetAdmin struct {
	t      *testing.T
	url    string // https://127.0.0.1:PORT
	caFile string
	caPEM  []byte
}

func (a *fleetAdmin) client(httpClient *http.Client, token string) *admin.Client {
	a.t.Helper()
	c, err := admin.NewClient(a.url, httpClient, token)
	if err != nil {
		a.t.Fatal(err)
	}
	return c
}

// cli runs `kube-oidc-issuer keys --admin-url ... --admin-ca-file ... ARGS` and returns its
// combined output.
func (a *fleetAdmin) cli(ctx context.Context, args ...string) (string, error) {
	a.t.Helper()
	cmd := exec.CommandContext(ctx, shared.issuerBin, append([]string{"keys", "--admin-url", a.url, "--admin-ca-file", a.caFile}, args...)...)
	cmd.Env = append(cmd.Environ(), "KUBECONFIG=/dev/null")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (a *fleetAdmin) mustCLI(ctx context.Context, args ...string) string {
	a.t.Helper()
	out, err := a.cli(ctx, args...)
	if err != nil {
		a.t.Fatalf("keys %s: %v\n%s", strings.Join(redactArgs(args), " "), err, out)
	}
	return out
}

// redactArgs hides the value of --token in a command line shown in a failure.
func redactArgs(args []string) []string {
	out := slices.Clone(args)
	for i := range out {
		if i > 0 && out[i-1] == "--token" {
			out[i] = "REDACTED"
		}
	}
	return out
}

// raw sends one request with the target exactly as given (no client-side cleaning or escaping)
// over a fresh TLS connection to the admin listener; token "" sends no Authorization header.
func (a *fleetAdmin) raw(ctx context.Context, method, target, token, body string) (int, []byte, http.Header) {
	a.t.Helper()
	addr := strings.TrimPrefix(a.url, "https://")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(a.caPEM)
	d := tls.Dialer{Config: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		a.t.Fatalf("dialing %s: %v", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	var req strings.Builder
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nAccept: application/json\r\n", method, target, addr)
	if token != "" {
		fmt.Fprintf(&req, "Authorization: Bearer %s\r\n", token)
	}
	if body != "" || method == http.MethodPost {
		fmt.Fprintf(&req, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	req.WriteString("\r\n" + body)
	if _, err := io.WriteString(conn, req.String()); err != nil {
		a.t.Fatalf("writing %s %s: %v", method, target, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		a.t.Fatalf("reading the answer to %s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

// grantFleetClusterAdmin creates service account ns/sa, grants it verbs on one cluster's admin
// paths (a ClusterRole with nonResourceURLs [ClusterPath, ClusterPath/*]) and returns a 10-minute
// token for the API server's audience (TokenRequest).
func grantFleetClusterAdmin(ctx context.Context, t *testing.T, kube kubernetes.Interface, ns, sa, clusterNS, cluster string, verbs ...string) string {
	t.Helper()
	if _, err := kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	name := "kube-oidc-issuer-keys-" + clusterNS + "-" + cluster
	p := admin.ClusterPath(clusterNS, cluster)
	if _, err := kube.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{p, p + "/*"}, Verbs: verbs}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-" + sa},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(600))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func getSecret(ctx context.Context, t *testing.T, kube kubernetes.Interface, ns, name string) *corev1.Secret {
	t.Helper()
	sec, err := kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading Secret %s/%s: %v", ns, name, err)
	}
	return sec
}

func parseStateSecret(t *testing.T, sec *corev1.Secret) *lifecycle.State {
	t.Helper()
	st, err := lifecycle.ParseDocument(sec.Data[lifecycle.DataKey])
	if err != nil {
		t.Fatalf("state document in %s/%s: %v", sec.Namespace, sec.Name, err)
	}
	return st
}

func kidsOfPublic(ks []keys.PublicKey) []string {
	out := make([]string, 0, len(ks))
	for _, k := range ks {
		out = append(out, k.KeyID())
	}
	return out
}
