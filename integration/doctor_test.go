package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"

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
