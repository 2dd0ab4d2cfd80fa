package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/doctor"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
)

// doctorReport runs `doctor ARGS --output json` and returns the report and the exit code.
func doctorReport(ctx context.Context, t *testing.T, env []string, args ...string) (*doctor.Report, int, time.Duration) {
	t.Helper()
	start := time.Now()
	out, errOut, err := iamCLI(ctx, t, env, append([]string{"doctor", "--output", "json"}, args...)...)
	took := time.Since(start)
	code := 0
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("doctor: %v\n%s", err, errOut)
	}
	var rep doctor.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("doctor printed no JSON report (%v):\n%s\n%s", err, out, errOut)
	}
	return &rep, code, took
}

// wantChecks asserts that exactly the checks named in failing failed, and the ones in passing
// passed.
func wantChecks(t *testing.T, what string, rep *doctor.Report, code int, passing, failing []string) {
	t.Helper()
	var failed []string
	for _, r := range rep.Results {
		if r.Status == doctor.Fail {
			failed = append(failed, r.Name)
		}
	}
	if strings.Join(failed, ",") != strings.Join(failing, ",") {
		t.Fatalf("%s: failed %v, want %v\n%+v", what, failed, failing, rep.Results)
	}
	if (code != 0) != (len(failing) > 0) {
		t.Errorf("%s: exit code %d with failures %v", what, code, failed)
	}
	for _, name := range passing {
		if r, ok := rep.Result(name); !ok || r.Status != doctor.Pass {
			t.Errorf("%s: %s = %+v, want PASS", what, name, r)
		}
	}
}

// TestDoctorAgainstLiveStack: a real kube-apiserver whose issuer is https://issuer.koi.test/...
// (reached through HTTPS_PROXY like TestServeKeepsIAMRegistration, since IAM forbids ports), the
// issuer's `serve` over TLS reading the signing-key Secret, moto as IAM. doctor runs as a user
// would, configured only through the environment (SSL_CERT_FILE for the test CA): missing
// provider, then all green after `register`, then thumbprint drift, then a wrong audience.
func TestDoctorAgainstLiveStack(t *testing.T) {
	skipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	m, client := startIAMMoto(t)
	dir := t.TempDir()
	chain := newIAMChain(t, "doctor")
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, chain.root.CertPEM())
	certFile, keyFile, err := chain.leaf.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	const issuerURL = "https://" + iamHost + "/clusters/doctor"
	const arn = "arn:aws:iam::123456789012:oidc-provider/" + iamHost + "/clusters/doctor"
	publicPort, internalPort := freePortPair(t)
	proxy := startIAMProxy(t, net.JoinHostPort("127.0.0.1", fmt.Sprint(publicPort)))
	env := iamProcessEnv(t, m, caFile, proxy.URL)

	signing := newRSAKey(t, 2048)
	cluster, kube := startCluster(ctx, t, dir, issuerURL, signing.private, nil)
	s := &stack{t: t, dir: dir, issuerURL: issuerURL, cluster: cluster, kube: kube}
	s.createNamespaceAndSA(ctx)
	s.writeSecret(ctx, map[string][]byte{"tls.crt": signing.public, "tls.key": signing.private})
	s.issuerCfg = harness.IssuerConfig{
		Binary: shared.issuerBin,
		Args: []string{"--issuer-url", issuerURL, "--secret", testNamespace + "/" + testSecret,
			"--kubeconfig", cluster.KubeconfigPath(), "--tls-cert-file", certFile, "--tls-key-file", keyFile},
		PublicPort:   publicPort,
		InternalPort: internalPort,
		LogPath:      filepath.Join(dir, "issuer.log"),
	}
	s.startIssuer(ctx)
	if err := s.issuer.WaitReady(ctx, readyTimeout); err != nil {
		t.Fatal(err)
	}

	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, []byte(s.mintToken(ctx)))
	args := []string{"--issuer-url", issuerURL, "--token", tokenFile}
	live := []string{"issuer-url", "discovery", "discovery-issuer", "jwks-reachable", "jwks-content-type", "jwks-cacheable", "jwks-keys",
		"token-issuer", "token-kid", "token-audience", "token-expiry", "token-signature"}

	rep, code, took := doctorReport(ctx, t, env, args...)
	wantChecks(t, "without --aws", rep, code, live, nil)
	if r, _ := rep.Result("iam-provider"); r.Status != doctor.Skip {
		t.Errorf("iam-provider without --aws: %+v, want SKIP", r)
	}
	t.Logf("doctor against the live issuer with a kube-apiserver token: %s (process included; the checks themselves %s)", took.Round(time.Millisecond), rep.Duration.Round(time.Millisecond))

	rep, code, _ = doctorReport(ctx, t, env, append(args, "--aws")...)
	wantChecks(t, "before register", rep, code, live, []string{"iam-provider"})
	if r, _ := rep.Result("iam-provider"); r.AWSError != doctor.ErrNoProvider+issuerURL || !strings.Contains(r.Fix, "register") {
		t.Errorf("missing provider reported as %+v", r)
	}

	if _, errOut, err := iamCLI(ctx, t, env, "register", "--issuer-url", issuerURL); err != nil {
		t.Fatalf("register: %v\n%s", err, errOut)
	}
	rep, code, took = doctorReport(ctx, t, env, append(args, "--aws")...)
	wantChecks(t, "after register", rep, code, append(live, "iam-provider", "iam-thumbprint", "iam-audience"), nil)
	t.Logf("doctor --aws all green: %s (process included; the checks themselves %s)", took.Round(time.Millisecond), rep.Duration.Round(time.Millisecond))

	// Thumbprint drift: someone pins a thumbprint of another CA.
	if _, err := client.UpdateOpenIDConnectProviderThumbprint(ctx, &awsiam.UpdateOpenIDConnectProviderThumbprintInput{
		OpenIDConnectProviderArn: aws.String(arn), ThumbprintList: []string{strings.Repeat("0f", 20)},
	}); err != nil {
		t.Fatal(err)
	}
	rep, code, _ = doctorReport(ctx, t, env, append(args, "--aws")...)
	wantChecks(t, "thumbprint drift", rep, code, live, []string{"iam-thumbprint"})
	if r, _ := rep.Result("iam-thumbprint"); r.AWSError != doctor.ErrThumbprint || !strings.Contains(r.Detail, chain.thumbprint) {
		t.Errorf("drift reported as %+v, want the live thumbprint %s named", r, chain.thumbprint)
	}

	// Mirror: `mirror` publishes to a moto bucket what serve serves; doctor --mirror compares.
	const bucket = "doctor-mirror"
	s3c := s3.NewFromConfig(m.AWSConfig(), func(o *s3.Options) { o.UsePathStyle = true })
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	s3env := append(env, "AWS_ENDPOINT_URL_S3="+m.URL)
	if _, errOut, err := iamCLI(ctx, t, s3env, "mirror", "--issuer-url", issuerURL, "--mirror", "s3://"+bucket,
		"--secret", testNamespace+"/"+testSecret, "--kubeconfig", cluster.KubeconfigPath(), "--s3-path-style", "--s3-manage-bucket-policy"); err != nil {
		t.Fatalf("mirror: %v\n%s", err, errOut)
	}
	mirrorArgs := []string{"--issuer-url", issuerURL, "--mirror", "s3://" + bucket, "--s3-path-style"}
	rep, code, _ = doctorReport(ctx, t, s3env, mirrorArgs...)
	wantChecks(t, "mirror current", rep, code, []string{"mirror"}, nil)

	const jwksKey = "clusters/doctor/openid/v1/jwks"
	if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(jwksKey),
		Body: strings.NewReader(`{"keys":[]}`), ContentType: aws.String("application/jwk-set+json")}); err != nil {
		t.Fatal(err)
	}
	rep, code, _ = doctorReport(ctx, t, s3env, mirrorArgs...)
	wantChecks(t, "mirror stale", rep, code, nil, []string{"mirror"})
	if r, _ := rep.Result("mirror"); !strings.Contains(r.Detail, "JWKS is stale") {
		t.Errorf("stale mirror reported as %+v", r)
	}

	if _, err := s3c.DeleteBucketPolicy(ctx, &s3.DeleteBucketPolicyInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	rep, code, _ = doctorReport(ctx, t, s3env, mirrorArgs...)
	wantChecks(t, "mirror private", rep, code, nil, []string{"mirror"})
	if r, _ := rep.Result("mirror"); !strings.Contains(r.Detail, "is not public") {
		t.Errorf("private mirror reported as %+v", r)
	}

	// The provider accepts only another audience.
	if _, errOut, err := iamCLI(ctx, t, env, "register", "--issuer-url", issuerURL, "--audience", "vault"); err != nil {
		t.Fatalf("register --audience vault: %v\n%s", err, errOut)
	}
	rep, code, _ = doctorReport(ctx, t, env, append(args, "--aws")...)
	wantChecks(t, "provider audience", rep, code, append(live, "iam-thumbprint"), []string{"iam-audience"})

	// A token for the wrong audience fails token-audience, and the text output explains it.
	out, _, err := iamCLI(ctx, t, env, "doctor", "--issuer-url", issuerURL, "--token", tokenFile, "--audience", "vault")
	if err == nil {
		t.Fatal("doctor exited 0 with a failing check")
	}
	mustContain(t, out, "FAIL token-audience: ")
	mustContain(t, out, "aws: "+doctor.ErrAudience)
	mustContain(t, out, "fix: ")
}

// TestDoctorControlPlaneSigning: doctor --kubeconfig against a real kube-apiserver and the issuer
// serving its signing-key Secret. A consistent cluster passes, through the least RBAC the docs
// name; a Secret rewritten without restarting kube-apiserver fails, first while the old key is
// still published (promote before the rollout: no AWS error yet), then once it is gone (AWS STS
// rejects the tokens); restarting kube-apiserver from the Secret makes it pass again.
func TestDoctorControlPlaneSigning(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	oldKey, newKey := newRSAKey(t, 2048), newRSAKey(t, 2048)
	s := newStack(t, stackOptions{signing: oldKey})
	oldKID, newKID := oldKey.kid(t), newKey.kid(t)
	caFile := filepath.Join(s.dir, "issuer-ca.pem")
	writeFile(t, caFile, s.caPEM)
	admin := s.cluster.KubeconfigPath()
	const secretRef = testNamespace + "/" + testSecret
	const saRef = testNamespace + "/" + testSA
	const check = "control-plane-signing"
	base := []string{"--issuer-url", s.issuerURL, "--ca-file", caFile}
	withSecret := slices.Concat(base, []string{"--kubeconfig", admin, "--signing-secret", secretRef, "--signing-probe-service-account", saRef})
	live := []string{"issuer-url", "discovery", "discovery-issuer", "jwks-reachable", "jwks-content-type", "jwks-cacheable", "jwks-keys"}
	wantResult := func(what string, rep *doctor.Report, want doctor.Result) {
		t.Helper()
		want.Name = check
		if got, _ := rep.Result(check); got != want {
			t.Errorf("%s: %s =\n%+v\nwant\n%+v", what, check, got, want)
		}
	}

	// Consistent: the Secret holds the key kube-apiserver signs with, and serve publishes it. The
	// kubeconfig comes from the environment here, the way the issuer's own flags do.
	rep, code, took := doctorReport(ctx, t, []string{"KUBE_OIDC_ISSUER_KUBECONFIG=" + admin}, slices.Concat(base, []string{"--signing-secret", secretRef, "--signing-probe-service-account", saRef})...)
	wantChecks(t, "consistent", rep, code, append(live, check), nil)
	wantResult("consistent", rep, doctor.Result{Status: doctor.Pass,
		Detail: fmt.Sprintf("the control plane signs with kid %s: the signing key in the Secret %s, and published", oldKID, secretRef)})
	t.Logf("doctor with the signing probe (3 TokenRequests) against the live stack: %s (process included; the checks themselves %s)", took.Round(time.Millisecond), rep.Duration.Round(time.Millisecond))

	// The text report never carries a token (nor anything shaped like a JWT).
	out, errOut, err := iamCLI(ctx, t, nil, slices.Concat([]string{"doctor"}, withSecret)...)
	if err != nil {
		t.Fatalf("doctor: %v\n%s\n%s", err, out, errOut)
	}
	if jwt := regexp.MustCompile(`eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+`); jwt.MatchString(out + errOut) {
		t.Fatalf("doctor printed a token:\n%s\n%s", out, errOut)
	}
	mustContain(t, out, "PASS "+check+": the control plane signs with kid "+oldKID)

	// The default probe ServiceAccount, default/default, does not exist without
	// kube-controller-manager: named as such, with the fix.
	rep, code, _ = doctorReport(ctx, t, nil, slices.Concat(base, []string{"--kubeconfig", admin})...)
	wantChecks(t, "no default ServiceAccount", rep, code, live, []string{check})
	wantResult("no default ServiceAccount", rep, doctor.Result{Status: doctor.Fail,
		Detail: `cannot mint a probe token (not found): requesting a token for ServiceAccount default/default: serviceaccounts "default" not found`,
		Fix:    "create the ServiceAccount (kubectl -n default create serviceaccount default), or point --signing-probe-service-account at an existing one"})

	// Least privilege: an identity without RBAC is told what to grant; with exactly create on the
	// probe ServiceAccount's token and get on the Secret (both by name), it passes.
	const user = "doctor-least-privilege"
	limited := impersonatingKubeconfig(t, admin, filepath.Join(s.dir, "limited-kubeconfig"), user)
	limitedArgs := slices.Concat(base, []string{"--kubeconfig", limited, "--signing-secret", secretRef, "--signing-probe-service-account", saRef})
	rep, code, _ = doctorReport(ctx, t, nil, limitedArgs...)
	wantChecks(t, "no RBAC", rep, code, live, []string{check})
	if r, _ := rep.Result(check); !strings.HasPrefix(r.Detail, "cannot mint a probe token (forbidden): ") || !strings.Contains(r.Detail, `User "`+user+`" cannot create resource "serviceaccounts/token"`) ||
		r.Fix != "grant the --kubeconfig identity create on serviceaccounts/token in namespace "+testNamespace+" (a Role with resourceNames: ["+testSA+"] is enough), or point --signing-probe-service-account at a ServiceAccount it may mint tokens for" {
		t.Errorf("no RBAC reported as %+v", r)
	}
	s.grantDoctor(ctx, user, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"serviceaccounts/token"}, ResourceNames: []string{testSA}, Verbs: []string{"create"}})
	rep, _ = doctorUntil(ctx, t, "token RBAC only", limitedArgs, func(r doctor.Result) bool { return !strings.Contains(r.Detail, "cannot mint") })
	wantResult("token RBAC only", rep, doctor.Result{Status: doctor.Fail,
		Detail: fmt.Sprintf(`cannot read the Secret %s (forbidden): secrets "%s" is forbidden: User "%s" cannot get resource "secrets" in API group "" in the namespace "%s"`, secretRef, testSecret, user, testNamespace),
		Fix:    "grant the --kubeconfig identity get on secrets in namespace " + testNamespace + " (a Role with resourceNames: [" + testSecret + "] is enough), or leave out --signing-secret"})
	s.grantDoctor(ctx, user, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{testSecret}, Verbs: []string{"get"}})
	rep, code = doctorUntil(ctx, t, "least privilege", limitedArgs, func(r doctor.Result) bool { return r.Status == doctor.Pass })
	wantChecks(t, "least privilege", rep, code, append(live, check), nil)

	// Promote without the rollout: the Secret's signing key is the new one, its bundle keeps the
	// old one published, kube-apiserver still signs with the old one.
	bundle := append(append([]byte{}, newKey.public...), oldKey.public...)
	s.writeSecret(ctx, map[string][]byte{"tls.crt": bundle, "tls.key": newKey.private})
	s.waitJWKS(ctx, 10*time.Second, func(m map[string]jwk) bool { _, ok := m[newKID]; return ok && len(m) == 2 })
	rep, code, _ = doctorReport(ctx, t, nil, withSecret...)
	wantChecks(t, "promoted, not rolled", rep, code, live, []string{check})
	wantResult("promoted, not rolled", rep, doctor.Result{Status: doctor.Fail,
		Detail: fmt.Sprintf("the control plane signs with kid %s, but the signing key in the Secret %s is kid %s (still published: its tokens verify until it leaves the JWKS)", oldKID, secretRef, newKID),
		Fix:    "roll the control plane: restart kube-apiserver from the Secret's contents (after a promote), or put the signing key back into the Secret"})

	// The Secret rewritten with only the new key, kube-apiserver still not restarted: the key
	// that signs is gone from the JWKS, so AWS STS rejects every token minted now.
	s.writeSecret(ctx, map[string][]byte{"tls.crt": newKey.public, "tls.key": newKey.private})
	s.waitJWKS(ctx, 10*time.Second, func(m map[string]jwk) bool { _, ok := m[newKID]; return ok && len(m) == 1 })
	rep, code, _ = doctorReport(ctx, t, nil, withSecret...)
	wantChecks(t, "rewritten, not rolled", rep, code, live, []string{check})
	wantResult("rewritten, not rolled", rep, doctor.Result{Status: doctor.Fail, AWSError: doctor.ErrRetrieveKey,
		Detail: fmt.Sprintf(`the control plane signs with kid %s; not in the JWKS: %s (published: %q); the signing key in the Secret %s is kid %s`, oldKID, oldKID, newKID, secretRef, newKID),
		Fix:    "put the signing key back into the Secret (serve publishes it again at once), or publish it through another key source (serve --key-file with its public half) and roll the control plane: restart kube-apiserver from the Secret's contents (after a promote)"})
	out, _, err = iamCLI(ctx, t, nil, slices.Concat([]string{"doctor"}, withSecret)...)
	if err == nil {
		t.Fatal("doctor exited 0 with a failing check")
	}
	mustContain(t, out, "FAIL "+check+": ")
	mustContain(t, out, "aws: "+doctor.ErrRetrieveKey)
	mustContain(t, out, "fix: put the signing key back into the Secret")

	// Rolled: kube-apiserver restarted from the Secret's contents.
	if err := s.cluster.RestartAPIServer(ctx, func(c *testclusterConfig) { c.SigningKeyPEM = newKey.private }); err != nil {
		t.Fatal(err)
	}
	rep, code, _ = doctorReport(ctx, t, nil, withSecret...)
	wantChecks(t, "rolled", rep, code, append(live, check), nil)
	wantResult("rolled", rep, doctor.Result{Status: doctor.Pass,
		Detail: fmt.Sprintf("the control plane signs with kid %s: the signing key in the Secret %s, and published", newKID, secretRef)})
}

// impersonatingKubeconfig writes a copy of the admin kubeconfig that acts as user (the admin may
// impersonate), so RBAC is evaluated for an identity without any grant.
func impersonatingKubeconfig(t *testing.T, admin, path, user string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range cfg.AuthInfos {
		ai.Impersonate = user
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// grantDoctor adds rule to a Role bound to user in the test namespace.
func (s *stack) grantDoctor(ctx context.Context, user string, rule rbacv1.PolicyRule) {
	s.t.Helper()
	rbac := s.kube.RbacV1()
	name := "doctor-" + strings.ReplaceAll(rule.Resources[0], "/", "-")
	if _, err := rbac.Roles(testNamespace).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: []rbacv1.PolicyRule{rule},
	}, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
	if _, err := rbac.RoleBindings(testNamespace).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
	}, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
}

// doctorUntil runs doctor until done holds for control-plane-signing (kube-apiserver's RBAC
// authorizer sees new bindings through an informer, a moment after they are written).
func doctorUntil(ctx context.Context, t *testing.T, what string, args []string, done func(doctor.Result) bool) (*doctor.Report, int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rep, code, _ := doctorReport(ctx, t, nil, args...)
		r, _ := rep.Result("control-plane-signing")
		if done(r) {
			return rep, code
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: control-plane-signing still %+v", what, r)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
