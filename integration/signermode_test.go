package integration

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/signerstate"
)

// signerProcess is one `kube-oidc-issuer signer` process.
type signerProcess struct {
	cmd      *exec.Cmd
	internal string
	logPath  string
	done     chan error
}

// startSignerProcess runs `kube-oidc-issuer signer` with args and waits until /readyz answers 200.
func startSignerProcess(ctx context.Context, t *testing.T, dir string, args ...string) *signerProcess {
	t.Helper()
	return startSignerProcessWith(ctx, t, dir, nil, args...)
}

// startSignerProcessWith is startSignerProcess with extra environment variables.
func startSignerProcessWith(ctx context.Context, t *testing.T, dir string, env []string, args ...string) *signerProcess {
	t.Helper()
	port := freePorts(t, 1)[0]
	p := &signerProcess{internal: "http://127.0.0.1:" + strconv.Itoa(port), logPath: filepath.Join(dir, fmt.Sprintf("signer-%d.log", time.Now().UnixNano())), done: make(chan error, 1)}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	p.cmd = exec.Command(shared.issuerBin, append([]string{"signer", "--internal-listen", "127.0.0.1:" + strconv.Itoa(port),
		"--refresh-hint", "2s", "--log-format", "text"}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.Env = append(os.Environ(), env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() { p.stop(t) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.internal + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("signer exited: %v\n%s", err, p.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("signer not ready within 30s\n%s", p.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *signerProcess) log() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// stop sends SIGTERM and waits; idempotent.
func (p *signerProcess) stop(t *testing.T) {
	t.Helper()
	if p.cmd.ProcessState != nil || p.done == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("signer did not stop cleanly: %v\n%s", err, p.log())
		}
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("signer ignored SIGTERM for 20s\n%s", p.log())
	}
	p.done = nil
	if t.Failed() {
		t.Logf("signer log:\n%s", p.log())
	}
}

// unreachableKubeconfig points at a port nothing listens on: a signer with it has only its cache.
func unreachableKubeconfig(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "unreachable.kubeconfig")
	port := freePorts(t, 1)[0]
	writeFile(t, p, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: none}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, port)))
	return p
}

const signerModeIssuer = "https://oidc.example.test/clusters/signer-mode"

// The signer-mode state Secret of the tests.
const signerStateNS, signerStateName = "kube-system", "kube-oidc-issuer-signer"

// signerDirs returns the test's temporary directory and one for unix sockets, whose paths hold at
// most 107 bytes (t.TempDir() names can be longer); both are removed when the test ends.
func signerDirs(t *testing.T) (dir, sockDir string) {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "koi-sgm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	return t.TempDir(), sockDir
}

// fetchJWKS GETs a JWKS, keyed by kid.
func fetchJWKS(ctx context.Context, t *testing.T, url string) map[string]jwk {
	t.Helper()
	code, body, err := fetch(ctx, http.DefaultClient, url)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, code, err)
	}
	return parseJWKS(t, body)
}

// TestSignerMode runs signer mode end to end with real processes: `signer init` imports an
// existing sa.key, `kube-oidc-issuer signer` serves a real kube-apiserver v1.37 started with
// --service-account-signing-endpoint and no key files, from its cache alone before the API server
// exists; then, connected, it writes the state Secret; a stage and a promote through the lifecycle
// (what serve's admin API calls) reach new tokens from the same kube-apiserver process within
// seconds; tokens from before stay valid; a signer restarted keeps the active key; and a cold
// start of kube-apiserver against a signer that reaches no API server signs with the promoted key.
func TestSignerMode(t *testing.T) {
	skipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	dir, sockDir := signerDirs(t)
	socket := filepath.Join(sockDir, "signer.sock")
	cache := filepath.Join(dir, "state.json")
	const stateNS, stateName = signerStateNS, signerStateName
	stateRef := stateNS + "/" + stateName

	// 1. signer init imports kubeadm's sa.key: its kid is the one kube-apiserver computed for it.
	saKey := newRSAKey(t, 2048)
	keyFile := writePEM(t, dir, "sa.key", saKey.private)
	out, err := exec.CommandContext(ctx, shared.issuerBin, "signer", "init", "--state-cache", cache, "--import-key", keyFile).CombinedOutput()
	if err != nil {
		t.Fatalf("signer init: %v\n%s", err, out)
	}
	kid1 := saKey.kid(t)
	if out2, err := exec.CommandContext(ctx, shared.issuerBin, "signer", "init", "--state-cache", cache, "--algorithm", "ES256").CombinedOutput(); err == nil {
		t.Fatalf("a second signer init overwrote the cache:\n%s", out2)
	}

	// 2. Cold start: the signer has its cache and no API server; kube-apiserver starts against it.
	unreachable := unreachableKubeconfig(t, dir)
	sig := startSignerProcess(ctx, t, dir, "--socket", socket, "--state-secret", stateRef, "--state-cache", cache, "--kubeconfig", unreachable)
	begin := time.Now()
	cluster, kube := startSignerCluster(ctx, t, filepath.Join(dir, "cluster"), signerModeIssuer, socket, sig.log)
	t.Logf("kube-apiserver up against a signer serving from its cache alone: %s", time.Since(begin).Round(time.Millisecond))
	tok1, err := signerMint(ctx, kube, 10*time.Second)
	if err != nil {
		t.Fatalf("TokenRequest: %v\n%s", err, sig.log())
	}
	assertSignerToken(t, tok1, kid1, pemPublicKey(t, saKey.public))
	if !signerReview(ctx, t, kube, tok1) {
		t.Fatal("TokenReview rejects a token signed with the imported key")
	}

	// 3. The signer restarted with the real kubeconfig: it writes the state Secret from its cache.
	sig.stop(t)
	sig = startSignerProcess(ctx, t, dir, "--socket", socket, "--state-secret", stateRef, "--state-cache", cache, "--kubeconfig", cluster.KubeconfigPath())
	store := lifecycle.NewStore(kube.CoreV1(), stateNS, stateName)
	waitFor(t, 30*time.Second, "the state Secret created from the cache", func() bool {
		st, err := store.Read(ctx)
		return err == nil && st.Signer
	})

	// 4. Stage: kube-apiserver publishes the new key within its refresh hint; promote: new tokens
	// carry it from the same kube-apiserver process.
	m, err := lifecycle.NewManager(lifecycle.Config{Secrets: kube.CoreV1(), StateSecret: lifecycle.Ref{Namespace: stateNS, Name: stateName},
		Signer: true, SignerRefresh: 10 * time.Second, MaxTokenLifetime: time.Hour, PublishLead: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	staged, err := m.Stage(ctx, lifecycle.AlgorithmRS256)
	if err != nil {
		t.Fatal(err)
	}
	begin = time.Now()
	waitAPIServerJWKS(ctx, t, kube, 30*time.Second, "the staged key in kube-apiserver's JWKS", func(m map[string]jwk) bool {
		_, ok := m[staged.KID]
		return ok && len(m) == 2
	})
	t.Logf("stage → in kube-apiserver's JWKS: %s", time.Since(begin).Round(time.Millisecond))
	begin = time.Now()
	if _, err := m.Promote(ctx, staged.KID, true); err != nil {
		t.Fatal(err)
	}
	tok2, attempts := mintUntilKID(ctx, t, kube, staged.KID, 30*time.Second)
	t.Logf("promote → first token signed with the new key: %s (attempt %d), no restart", time.Since(begin).Round(time.Millisecond), attempts)
	if !signerReview(ctx, t, kube, tok1) || !signerReview(ctx, t, kube, tok2) {
		t.Fatal("TokenReview rejects the token from before or after the promote")
	}
	// serve in signer mode publishes the same state: go-oidc verifies both tokens with its JWKS,
	// which holds exactly kube-apiserver's keys.
	issuer := startServe(ctx, t, harness.IssuerConfig{
		Args:    []string{"--issuer-url", signerModeIssuer, "--state-secret", stateRef, "--kubeconfig", cluster.KubeconfigPath()},
		LogPath: filepath.Join(dir, "serve.log"),
	})
	jwksURL := "http://" + issuer.PublicAddr + "/clusters/signer-mode/openid/v1/jwks"
	verifier := oidc.NewVerifier(signerModeIssuer, oidc.NewRemoteKeySet(ctx, jwksURL), &oidc.Config{ClientID: stsAudience})
	for name, tok := range map[string]string{"imported key": tok1, "promoted key": tok2} {
		if _, err := verifier.Verify(ctx, tok); err != nil {
			t.Errorf("go-oidc with serve's JWKS rejects the token signed by the %s: %v", name, err)
		}
	}
	if ours, theirs := fetchJWKS(ctx, t, jwksURL), apiserverJWKS(ctx, t, kube); !maps.Equal(ours, theirs) {
		t.Errorf("serve publishes %v, kube-apiserver %v", slices.Sorted(maps.Keys(ours)), slices.Sorted(maps.Keys(theirs)))
	}

	waitFor(t, 10*time.Second, "the promoted state in the cache", func() bool {
		st, err := signerstate.ReadCache(cache)
		a, _ := st.Active()
		return err == nil && a.KID == staged.KID
	})

	// 5. Signer restarted: it signs with the promoted key at once.
	sig.stop(t)
	sig = startSignerProcess(ctx, t, dir, "--socket", socket, "--state-secret", stateRef, "--state-cache", cache, "--kubeconfig", cluster.KubeconfigPath())
	tok3, attempts := mintUntilKID(ctx, t, kube, staged.KID, 30*time.Second)
	t.Logf("signer restarted: token with the promoted key at attempt %d", attempts)

	// 5b. A second control-plane node: its own signer process with its own copy of the cache, its
	// own kube-apiserver on the same etcd. One promote switches both.
	cached, err := signerstate.ReadCache(cache)
	if err != nil {
		t.Fatal(err)
	}
	cache2 := filepath.Join(dir, "state-node2.json")
	if err := signerstate.WriteCache(cache2, cached); err != nil {
		t.Fatal(err)
	}
	socket2 := filepath.Join(sockDir, "signer2.sock")
	startSignerProcess(ctx, t, dir, "--socket", socket2, "--state-secret", stateRef, "--state-cache", cache2, "--kubeconfig", cluster.KubeconfigPath())
	api2, err := cluster.StartAPIServer(ctx, func(c *testcluster.Config) { c.ServiceAccountSigningEndpoint = socket2 })
	if err != nil {
		t.Fatal(err)
	}
	rc2 := cluster.RESTConfig()
	rc2.Host = api2.URL()
	kube2, err := kubernetes.NewForConfig(rc2)
	if err != nil {
		t.Fatal(err)
	}
	if tok, err := signerMint(ctx, kube2, 10*time.Second); err != nil || kidOf(t, tok) != staged.KID {
		t.Fatalf("second kube-apiserver before the promote: %v", err)
	}
	third, err := m.Stage(ctx, lifecycle.AlgorithmRS256)
	if err != nil {
		t.Fatal(err)
	}
	begin = time.Now()
	if _, err := m.Promote(ctx, third.KID, true); err != nil {
		t.Fatal(err)
	}
	var nodeTokens [2]string
	for i, k := range []kubernetes.Interface{kube, kube2} {
		tok, attempts := mintUntilKID(ctx, t, k, third.KID, 30*time.Second)
		nodeTokens[i] = tok
		t.Logf("one promote, node %d: first token with the new key %s after the promote (attempt %d)", i+1, time.Since(begin).Round(time.Millisecond), attempts)
	}
	if !signerReview(ctx, t, kube, nodeTokens[1]) || !signerReview(ctx, t, kube2, nodeTokens[0]) || !signerReview(ctx, t, kube2, tok1) {
		t.Fatal("a kube-apiserver rejects a token minted through the other node, or the imported key's token")
	}
	if err := api2.Stop(); err != nil {
		t.Errorf("stopping the second kube-apiserver: %v", err)
	}

	// 6. Full cold start: the signer from its cache alone, then kube-apiserver restarted.
	sig.stop(t)
	sig = startSignerProcess(ctx, t, dir, "--socket", socket, "--state-secret", stateRef, "--state-cache", cache, "--kubeconfig", unreachable)
	begin = time.Now()
	if err := cluster.RestartAPIServer(ctx, nil); err != nil {
		t.Fatalf("restarting kube-apiserver against a cache-only signer: %v\n%s", err, sig.log())
	}
	tok4, _ := mintUntilKID(ctx, t, kube, third.KID, 30*time.Second)
	t.Logf("cold start (kube-apiserver restarted, signer without API server): token with the promoted key %s later", time.Since(begin).Round(time.Millisecond))
	for name, tok := range map[string]string{"imported key": tok1, "promoted key": tok2, "after the signer restart": tok3, "after the cold start": tok4} {
		if !signerReview(ctx, t, kube, tok) {
			t.Errorf("TokenReview rejects the token signed by the %s", name)
		}
	}
}

// pemPublicKey parses a PUBLIC KEY PEM.
func pemPublicKey(t *testing.T, pemBytes []byte) crypto.PublicKey {
	t.Helper()
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		t.Fatal("no PEM block")
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// TestSignerModeKMS: signer mode with keys held in AWS KMS (moto_server). serve --kms-keys with
// scheduled rotation creates the next key in KMS and promotes it; the signer process signs through
// kms:Sign; tokens verify with kube-apiserver's TokenReview and with go-oidc through serve's JWKS,
// and the state holds the key's ARN and no private key.
func TestSignerModeKMS(t *testing.T) {
	skipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir, sockDir := signerDirs(t)
	socket := filepath.Join(sockDir, "signer.sock")
	cache := filepath.Join(dir, "state.json")
	const stateNS, stateName = signerStateNS, signerStateName
	stateRef := stateNS + "/" + stateName

	m := harness.StartMotoT(t, harness.MotoConfig{LogPath: filepath.Join(dir, "moto.log")})
	awsEnv := []string{
		"AWS_ACCESS_KEY_ID=" + harness.MotoAccessKeyID, "AWS_SECRET_ACCESS_KEY=" + harness.MotoSecretAccessKey,
		"AWS_REGION=" + harness.MotoRegion, "AWS_CONFIG_FILE=" + filepath.Join(dir, "no-config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "no-credentials"), "AWS_EC2_METADATA_DISABLED=true",
		"AWS_ENDPOINT_URL_KMS=" + m.URL,
	}

	if out, err := exec.CommandContext(ctx, shared.issuerBin, "signer", "init", "--state-cache", cache, "--algorithm", "RS256").CombinedOutput(); err != nil {
		t.Fatalf("signer init: %v\n%s", err, out)
	}
	sig := startSignerProcess(ctx, t, dir, "--socket", socket, "--state-secret", stateRef, "--state-cache", cache,
		"--kubeconfig", unreachableKubeconfig(t, dir))
	cluster, kube := startSignerCluster(ctx, t, filepath.Join(dir, "cluster"), signerModeIssuer, socket, sig.log)
	sig.stop(t)
	startSignerProcessWith(ctx, t, dir, awsEnv, "--socket", socket, "--state-secret", stateRef, "--state-cache", cache,
		"--kubeconfig", cluster.KubeconfigPath())
	store := lifecycle.NewStore(kube.CoreV1(), stateNS, stateName)
	waitFor(t, 30*time.Second, "the state Secret created from the cache", func() bool {
		st, err := store.Read(ctx)
		return err == nil && st.Signer
	})

	// Scheduled rotation every 6 s with a 3 s publish lead: the next key is created in KMS.
	issuer := startServe(ctx, t, harness.IssuerConfig{
		Args: []string{"--issuer-url", signerModeIssuer, "--state-secret", stateRef, "--kubeconfig", cluster.KubeconfigPath(),
			"--kms-keys", "--rotate-every", "6s", "--publish-lead", "3s", "--max-age", "1s"},
		Env: awsEnv,
	})
	var kmsKey lifecycle.Record
	waitFor(t, 60*time.Second, "a KMS key promoted by scheduled rotation", func() bool {
		st, err := store.Read(ctx)
		if err != nil {
			return false
		}
		a, ok := st.Active()
		kmsKey = a
		return ok && a.KMSKey != ""
	})
	if kmsKey.HasPrivateKey() || !strings.HasPrefix(kmsKey.KMSKey, "arn:aws:kms:"+harness.MotoRegion+":") {
		t.Fatalf("KMS-held active key: ARN %q, private key in the state %v", kmsKey.KMSKey, kmsKey.HasPrivateKey())
	}
	tok, attempts := mintUntilKID(ctx, t, kube, kmsKey.KID, 30*time.Second)
	t.Logf("token signed through kms:Sign (moto) with kid %s at attempt %d", kmsKey.KID, attempts)
	assertSignerToken(t, tok, kmsKey.KID, kmsKey.Public.Public())
	if !signerReview(ctx, t, kube, tok) {
		t.Fatal("TokenReview rejects the KMS-signed token")
	}
	jwksURL := "http://" + issuer.PublicAddr + "/clusters/signer-mode/openid/v1/jwks"
	verifier := oidc.NewVerifier(signerModeIssuer, oidc.NewRemoteKeySet(ctx, jwksURL), &oidc.Config{ClientID: stsAudience})
	if _, err := verifier.Verify(ctx, tok); err != nil {
		t.Fatalf("go-oidc with serve's JWKS rejects the KMS-signed token: %v", err)
	}
	cached, err := os.ReadFile(cache)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cached), kmsKey.KMSKey) {
		t.Fatal("the signer's cache does not hold the KMS key's ARN")
	}
}
