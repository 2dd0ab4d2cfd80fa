package integration

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
)

// mirrorStack is a real kube-apiserver whose issuer URL is a bucket on a real MinIO serving HTTPS
// (path style: https://127.0.0.1:PORT/oidc), and a kube-oidc-issuer that watches the signing-key
// Secret and mirrors the documents into that bucket. Relying parties read the documents from
// MinIO only; the issuer's own listener is a private detail.
type mirrorStack struct {
	*stack
	minio      *harness.MinIO
	store      *s3Store
	bucket     string
	publicPort int
}

const mirrorBucket = "oidc"

func newMirrorStack(t *testing.T, signing signingKey) *mirrorStack {
	t.Helper()
	skipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()

	ca, err := pki.NewCA("kube-oidc-issuer mirror e2e CA")
	if err != nil {
		t.Fatal(err)
	}
	store, minio := startMinIOStore(t, ca, nil)
	store.createBucket(t, mirrorBucket)
	issuerURL := store.endpoint + "/" + mirrorBucket

	publicPort, internalPort := freePortPair(t)
	certFile, keyFile, relying := issuerTLS(t, ca, dir)

	cluster, kube := startCluster(ctx, t, dir, issuerURL, signing.private, nil)
	s := &stack{t: t, dir: dir, issuerURL: issuerURL, cluster: cluster, kube: kube, relying: relying, caPEM: ca.CertPEM()}
	s.createNamespaceAndSA(ctx)
	s.writeSecret(ctx, map[string][]byte{"tls.crt": signing.public, "tls.key": signing.private})

	s.issuerCfg = harness.IssuerConfig{
		Binary: shared.issuerBin,
		Args: []string{
			"--issuer-url", issuerURL,
			"--secret", testNamespace + "/" + testSecret,
			"--kubeconfig", cluster.KubeconfigPath(),
			"--tls-cert-file", certFile,
			"--tls-key-file", keyFile,
			"--mirror", "s3://" + mirrorBucket,
			"--s3-endpoint", store.endpoint,
			"--s3-path-style",
			"--s3-manage-bucket-policy",
		},
		// Credentials from the standard chain, the test CA through AWS_CA_BUNDLE.
		Env:          append([]string{"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}, store.awsEnv...),
		PublicPort:   publicPort,
		InternalPort: internalPort,
		LogPath:      filepath.Join(dir, "issuer.log"),
	}
	s.startIssuer(ctx)
	if err := s.issuer.WaitReady(ctx, readyTimeout); err != nil {
		t.Fatal(err)
	}
	return &mirrorStack{stack: s, minio: minio, store: store, bucket: mirrorBucket, publicPort: publicPort}
}

// mirrored fetches a document from the mirror (MinIO) anonymously, as relying parties do.
func (m *mirrorStack) mirrored(ctx context.Context, path string) (int, []byte) {
	m.t.Helper()
	return m.fetch(ctx, m.issuerURL+path)
}

// served fetches a document from the issuer's own listener.
func (m *mirrorStack) served(ctx context.Context, path string) (int, []byte) {
	m.t.Helper()
	return m.fetch(ctx, "https://127.0.0.1:"+strconv.Itoa(m.publicPort)+"/"+m.bucket+path)
}

func (m *mirrorStack) fetch(ctx context.Context, u string) (int, []byte) {
	m.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := m.relying.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// waitMirroredJWKS polls the mirrored JWKS until cond holds, and returns how long that took.
func (m *mirrorStack) waitMirroredJWKS(ctx context.Context, timeout time.Duration, cond func(map[string]jwk) bool) time.Duration {
	m.t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < timeout {
		code, body := m.mirrored(ctx, "/openid/v1/jwks")
		if code == http.StatusOK && cond(parseJWKS(m.t, body)) {
			return time.Since(start)
		}
		last = fmt.Sprintf("%d %s", code, body)
		time.Sleep(convergePeriod)
	}
	m.t.Fatalf("mirrored JWKS did not converge within %s; last: %s\nissuer log:\n%s", timeout, last, m.issuer.LogTail(4000))
	return 0
}

// mirrorStatus digs the first mirror's status out of /readyz, and returns the status code.
func (m *mirrorStack) mirrorStatus(ctx context.Context) (int, map[string]any) {
	m.t.Helper()
	code, details := m.readyz(ctx)
	checks, _ := details["checks"].(map[string]any)
	mirrors, _ := checks["mirrors"].([]any)
	if len(mirrors) != 1 {
		m.t.Fatalf("/readyz has no mirror status: %v", details)
	}
	st, _ := mirrors[0].(map[string]any)
	return code, st
}

// minioRoleARN is the role MinIO creates for an OpenID provider with a role policy: a hash of the
// client ID, in MinIO's region.
func minioRoleARN(clientID string) string {
	sum := sha1.Sum([]byte(clientID))
	return "arn:minio:iam:" + harness.MinIORegion + "::role/" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// enableMinIOOpenID restarts MinIO with its OpenID provider configured from the discovery document
// mirrored into its own bucket.
func (m *mirrorStack) enableMinIOOpenID(ctx context.Context) {
	m.t.Helper()
	err := m.minio.Restart(ctx, []string{
		"MINIO_IDENTITY_OPENID_CONFIG_URL=" + m.issuerURL + "/.well-known/openid-configuration",
		"MINIO_IDENTITY_OPENID_CLIENT_ID=" + stsAudience,
		"MINIO_IDENTITY_OPENID_ROLE_POLICY=readonly",
	})
	if err != nil {
		m.t.Fatal(err)
	}
	// MinIO answers ready before its IAM subsystem has loaded the role: wait until STS gets as
	// far as looking at a token.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := m.assumeRole(ctx, "not.a.token")
		if err != nil && !strings.Contains(err.Error(), "is not defined") && !strings.Contains(err.Error(), "not initialized") {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("MinIO's OpenID role did not become usable: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// assumeRole calls MinIO's STS AssumeRoleWithWebIdentity with token and returns the access key
// it grants, or MinIO's error.
func (m *mirrorStack) assumeRole(ctx context.Context, token string) (string, error) {
	form := url.Values{
		"Action":           {"AssumeRoleWithWebIdentity"},
		"Version":          {"2011-06-15"},
		"WebIdentityToken": {token},
		"RoleArn":          {minioRoleARN(stsAudience)},
		"DurationSeconds":  {"900"},
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, m.store.endpoint+"/", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := m.store.anonymous.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("STS %s: %s", resp.Status, body)
	}
	var out struct {
		AccessKeyID string `xml:"AssumeRoleWithWebIdentityResult>Credentials>AccessKeyId"`
	}
	if err := xml.Unmarshal(body, &out); err != nil || out.AccessKeyID == "" {
		return "", fmt.Errorf("STS answered 200 without credentials (%v): %s", err, body)
	}
	return out.AccessKeyID, nil
}

func (m *mirrorStack) mustAssumeRole(ctx context.Context, token, what string) {
	m.t.Helper()
	if _, err := m.assumeRole(ctx, token); err != nil {
		m.t.Fatalf("MinIO STS rejected %s: %v\nMinIO log:\n%s", what, err, m.minio.LogTail(3000))
	}
}

// TestMirrorEndToEndMinIOSTS: the issuer URL is a bucket on MinIO. A token minted by the real
// kube-apiserver is accepted by MinIO's STS AssumeRoleWithWebIdentity, whose OpenID configuration
// URL is the discovery document mirrored into that bucket, and go-oidc verifies the same token
// against the mirrored URL. After a key rotation, the new token is accepted through the mirror too.
func TestMirrorEndToEndMinIOSTS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k1, k2 := newRSAKey(t, 2048), newRSAKey(t, 2048)
	m := newMirrorStack(t, k1)

	took := m.waitMirroredJWKS(ctx, 30*time.Second, func(keys map[string]jwk) bool { _, ok := keys[k1.kid(t)]; return ok && len(keys) == 1 })
	t.Logf("documents mirrored into MinIO %s after the issuer was ready", took.Round(time.Millisecond))
	// The mirror holds exactly what the issuer serves, which is exactly what kube-apiserver
	// itself would serve for this issuer.
	for _, path := range []string{"/.well-known/openid-configuration", "/openid/v1/jwks"} {
		code, mirrored := m.mirrored(ctx, path)
		_, served := m.served(ctx, path)
		if code != http.StatusOK || !bytes.Equal(mirrored, served) {
			t.Fatalf("%s: mirror %d %s, issuer %s", path, code, mirrored, served)
		}
	}
	if _, disco := m.mirrored(ctx, "/.well-known/openid-configuration"); !bytes.Equal(disco, m.apiserverGet(ctx, "/.well-known/openid-configuration")) {
		t.Fatalf("mirrored discovery differs from kube-apiserver's: %s", disco)
	}

	m.enableMinIOOpenID(ctx)
	token1 := m.mintToken(ctx)
	m.mustAssumeRole(ctx, token1, "a token minted by kube-apiserver")
	m.mustVerify(ctx, token1) // go-oidc, discovery and JWKS from the mirrored URL
	// MinIO does verify: a token with a damaged signature is refused.
	tampered := token1[:len(token1)-4] + strings.Map(func(r rune) rune {
		if r == 'A' {
			return 'B'
		}
		return 'A'
	}, token1[len(token1)-4:])
	if _, err := m.assumeRole(ctx, tampered); err == nil {
		t.Fatal("MinIO STS accepted a token with a damaged signature")
	}

	// Rotate: the Secret publishes both keys and signs with the new one; kube-apiserver follows.
	bundle := append(append([]byte{}, k2.public...), k1.public...)
	m.writeSecret(ctx, map[string][]byte{"tls.crt": bundle, "tls.key": k2.private})
	took = m.waitMirroredJWKS(ctx, 30*time.Second, func(keys map[string]jwk) bool { return len(keys) == 2 })
	t.Logf("rotated key set mirrored %s after the Secret update", took.Round(time.Millisecond))
	if err := m.cluster.RestartAPIServer(ctx, func(c *testclusterConfig) {
		c.SigningKeyPEM = k2.private
		c.VerificationKeysPEM = [][]byte{k1.public}
	}); err != nil {
		t.Fatal(err)
	}
	token2 := m.mintToken(ctx)
	if kidOf(t, token2) != k2.kid(t) {
		t.Fatal("kube-apiserver did not sign with the new key")
	}
	m.mustAssumeRole(ctx, token2, "a token signed with the new key")
	m.mustAssumeRole(ctx, token1, "a token signed with the old key after the rotation")
	m.mustVerify(ctx, token2)

	code, st := m.mirrorStatus(ctx)
	pr, _ := st["publicRead"].(map[string]any)
	if code != http.StatusOK || st["inSync"] != true || st["sink"] != "s3://"+mirrorBucket || pr["public"] != true || pr["managed"] != true {
		t.Fatalf("/readyz %d, mirror status %v", code, st)
	}
	metrics := m.metrics(ctx)
	if gen, mirrored := metricValue(metrics, "kube_oidc_issuer_keyset_generation"), metricValue(metrics, `kube_oidc_issuer_mirror_generation{sink="s3://oidc"}`); gen == "" || gen != mirrored {
		t.Fatalf("keyset generation %q, mirrored generation %q", gen, mirrored)
	}
	if v := metricValue(metrics, `kube_oidc_issuer_mirror_public_read{sink="s3://oidc"}`); v != "1" {
		t.Fatalf("mirror_public_read %q", v)
	}

	// The one-shot command reads the same Secret and plans the same objects.
	out, err := exec.CommandContext(ctx, shared.issuerBin, "mirror", "--dry-run", "--issuer-url", m.issuerURL,
		"--mirror", "s3://"+mirrorBucket, "--s3-endpoint", m.store.endpoint, "--s3-path-style",
		"--secret", testNamespace+"/"+testSecret, "--kubeconfig", m.cluster.KubeconfigPath()).CombinedOutput()
	if err != nil {
		t.Fatalf("mirror --dry-run --secret: %v\n%s", err, out)
	}
	mustContain(t, string(out), "would write s3://oidc/openid/v1/jwks")
	mustContain(t, string(out), k2.kid(t)+", "+k1.kid(t))
}

// TestMirrorConvergesAfterS3Outage: with the S3 endpoint down the issuer keeps serving (and ready),
// follows a key change, and reports the failing mirror on /readyz and in metrics; once the endpoint
// is back, the mirror converges without a restart.
func TestMirrorConvergesAfterS3Outage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k1, k2 := newRSAKey(t, 2048), newRSAKey(t, 2048)
	m := newMirrorStack(t, k1)
	m.waitMirroredJWKS(ctx, 30*time.Second, func(keys map[string]jwk) bool { return len(keys) == 1 })
	token := m.mintToken(ctx)

	if err := m.minio.Stop(); err != nil {
		t.Fatal(err)
	}
	bundle := append(append([]byte{}, k2.public...), k1.public...)
	m.writeSecret(ctx, map[string][]byte{"tls.crt": bundle, "tls.key": k1.private})
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := m.served(ctx, "/openid/v1/jwks")
		if code == http.StatusOK && len(parseJWKS(t, body)) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with S3 down the issuer did not serve the new key set: %d %s", code, body)
		}
		time.Sleep(convergePeriod)
	}
	var st map[string]any
	for deadline := time.Now().Add(30 * time.Second); ; {
		var code int
		code, st = m.mirrorStatus(ctx)
		if code != http.StatusOK {
			t.Fatalf("/readyz %d while only the mirror fails: a failing mirror must not make the issuer unready", code)
		}
		if n, _ := st["consecutiveFailures"].(float64); n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mirror did not report retries: %v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st["inSync"] != false || st["lastError"] == "" {
		t.Fatalf("mirror status while S3 is down: %v", st)
	}
	if failures := metricValue(m.metrics(ctx), `kube_oidc_issuer_mirror_failures_total{sink="s3://oidc"}`); failures == "" || failures == "0" {
		t.Fatalf("failures not counted: %q", failures)
	}
	t.Logf("while S3 was down: %v", st["lastError"])
	if strings.Contains(m.issuer.Log(), harness.MinIORootPassword) {
		t.Fatal("the issuer logged the S3 secret access key")
	}

	if err := m.minio.Start(ctx); err != nil {
		t.Fatal(err)
	}
	took := m.waitMirroredJWKS(ctx, 2*time.Minute, func(keys map[string]jwk) bool { return len(keys) == 2 })
	t.Logf("mirror converged %s after S3 came back", took.Round(time.Millisecond))
	// The object is readable a moment before the mirror records its success (it writes the
	// other object, or checks it unchanged, first): poll the status briefly.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, st = m.mirrorStatus(ctx)
		if st["inSync"] == true && st["consecutiveFailures"] == 0.0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status 10s after convergence: %v", st)
		}
	}
	m.mustVerify(ctx, token)
}

// TestMirrorCommandWithMoto: `kube-oidc-issuer mirror` publishes once to S3 and exits, with the
// endpoint and credentials from the SDK's standard environment variables (AWS_ENDPOINT_URL_S3),
// skips unchanged objects on a second run, and never prints the secret key.
func TestMirrorCommandWithMoto(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	store := startMotoStore(t)
	const bucket = "cli-bucket"
	store.createBucket(t, bucket)
	key := newRSAKey(t, 2048)
	keyFile := writePEM(t, t.TempDir(), "sa.pub", key.public)
	const secret = "koi-secret-that-must-never-be-logged"
	env := append(os.Environ(), "AWS_ACCESS_KEY_ID=koi-access-key", "AWS_SECRET_ACCESS_KEY="+secret, "AWS_REGION=us-east-1",
		"AWS_CA_BUNDLE=", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_ENDPOINT_URL_S3="+store.endpoint)
	// An AWS path-style issuer URL: bucket and (empty) prefix follow from it.
	args := []string{"mirror", "--issuer-url", "https://s3.us-east-1.amazonaws.com/" + bucket, "--mirror", "s3://" + bucket,
		"--key-file", keyFile, "--s3-path-style", "--s3-manage-bucket-policy", "--log-level", "debug"}
	runCLI := func(extra ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, shared.issuerBin, append(args, extra...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("mirror %v: %v\n%s", extra, err, out)
		}
		if strings.Contains(string(out), secret) {
			t.Fatalf("the secret access key was printed:\n%s", out)
		}
		return string(out)
	}

	out := runCLI("--dry-run")
	mustContain(t, out, "would write s3://cli-bucket/openid/v1/jwks")
	mustContain(t, out, `"Resource": [`)
	if resp, _, err := store.get(ctx, bucket, "openid/v1/jwks"); err != nil || resp.StatusCode == http.StatusOK {
		t.Fatalf("--dry-run wrote to S3 (%v)", err)
	}

	out = runCLI()
	mustContain(t, out, "wrote     s3://cli-bucket/openid/v1/jwks\nwrote     s3://cli-bucket/.well-known/openid-configuration\n")
	mustContain(t, out, "public    s3://cli-bucket")
	resp, body, err := store.get(ctx, bucket, ".well-known/openid-configuration")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("anonymous GET of the mirrored discovery document: %v %v", err, resp)
	}
	var disco struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &disco); err != nil || disco.Issuer != "https://s3.us-east-1.amazonaws.com/"+bucket || disco.JWKSURI != disco.Issuer+"/openid/v1/jwks" {
		t.Fatalf("mirrored discovery %s (%v)", body, err)
	}

	out = runCLI()
	if strings.Contains(out, "wrote") || strings.Count(out, "unchanged s3://cli-bucket/") != 2 {
		t.Fatalf("second run should change nothing:\n%s", out)
	}
}
