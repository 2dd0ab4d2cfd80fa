package integration

import (
	"bytes"
	"context"
	"crypto/sha1" //nolint:gosec // IAM thumbprints are SHA-1
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/oidcprovider"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/thumbprint"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
)

// iamHost is the issuer's host in these tests: AWS rules forbid a port in the provider URL, so the
// issuer is reached as iamHost:443 through a local CONNECT proxy (harness.ConnectProxy) that
// routes it to a server on 127.0.0.1 — the HTTPS_PROXY path real deployments take.
const iamHost = "issuer.koi.test"

// iamChain is one CA hierarchy and a server certificate for iamHost from its intermediate.
type iamChain struct {
	root, inter *pki.CA
	leaf        *pki.Leaf
	cert        tls.Certificate
	// thumbprint is the SHA-1 of the intermediate: the last certificate the server presents.
	thumbprint string
}

func newIAMChain(t *testing.T, name string) *iamChain {
	t.Helper()
	root, err := pki.NewCA(name + " root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate(name + " intermediate")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := inter.IssueServer(iamHost)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := leaf.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(inter.Certificate().Raw) //nolint:gosec
	return &iamChain{root: root, inter: inter, leaf: leaf, cert: cert, thumbprint: hex.EncodeToString(sum[:])}
}

// iamTLSServer is an HTTPS server on 127.0.0.1 whose certificate chain can be swapped (a CA
// change).
type iamTLSServer struct {
	addr  string
	chain atomic.Pointer[iamChain]
}

func startIAMTLSServer(t *testing.T, c *iamChain) *iamTLSServer {
	t.Helper()
	s := &iamTLSServer{}
	s.chain.Store(c)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &s.chain.Load().cert, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// startIAMProxy routes iamHost:443 to backend.
func startIAMProxy(t *testing.T, backend string) *harness.ConnectProxy {
	t.Helper()
	p, err := harness.StartConnectProxy(map[string]string{iamHost + ":443": backend}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// startIAMMoto starts moto_server with the harness extension that implements the IAM client-ID
// actions moto lacks. Missing moto is a failure that says what to install, never a skip.
func startIAMMoto(t *testing.T) (*harness.Moto, *awsiam.Client) {
	t.Helper()
	// Missing moto_server fails the test with StartMoto's error, which says what to install.
	m := harness.StartMotoT(t, harness.MotoConfig{IAMClientIDs: true})
	return m, awsiam.NewFromConfig(m.AWSConfig())
}

// iamProviderState is a provider as moto reports it, read with the SDK independently of the code
// under test.
type iamProviderState struct {
	URL         string
	Audiences   []string
	Thumbprints []string
	Tags        map[string]string
}

func getIAMProvider(ctx context.Context, t *testing.T, c *awsiam.Client, arn string) (*iamProviderState, bool) {
	t.Helper()
	out, err := c.GetOpenIDConnectProvider(ctx, &awsiam.GetOpenIDConnectProviderInput{OpenIDConnectProviderArn: aws.String(arn)})
	if err != nil {
		if strings.Contains(err.Error(), "NoSuchEntity") {
			return nil, false
		}
		t.Fatalf("GetOpenIDConnectProvider %s: %v", arn, err)
	}
	s := &iamProviderState{URL: aws.ToString(out.Url), Audiences: out.ClientIDList, Thumbprints: out.ThumbprintList, Tags: map[string]string{}}
	for _, tag := range out.Tags {
		s.Tags[aws.ToString(tag.Key)] = aws.ToString(tag.Value)
	}
	return s, true
}

func listIAMProviders(ctx context.Context, t *testing.T, c *awsiam.Client) []string {
	t.Helper()
	out, err := c.ListOpenIDConnectProviders(ctx, &awsiam.ListOpenIDConnectProvidersInput{})
	if err != nil {
		t.Fatal(err)
	}
	var arns []string
	for _, e := range out.OpenIDConnectProviderList {
		arns = append(arns, aws.ToString(e.Arn))
	}
	return arns
}

// TestIAMRegistrationWithMoto drives the reconciler against moto_server, with thumbprints fetched
// from a real TLS server through a proxy: create, a second run that changes nothing, a CA change
// (new thumbprint first, old one kept), a tag change, an audience change (the client-ID actions
// moto lacks, through the harness extension), and a provider deleted behind our back, recreated.
// Every result is read back from moto with the SDK.
func TestIAMRegistrationWithMoto(t *testing.T) {
	skipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, client := startIAMMoto(t)
	ca1, ca2 := newIAMChain(t, "ca-1"), newIAMChain(t, "ca-2")
	srv := startIAMTLSServer(t, ca1)
	proxy := startIAMProxy(t, srv.addr)
	roots := x509.NewCertPool()
	roots.AddCert(ca1.root.Certificate())
	roots.AddCert(ca2.root.Certificate())
	fetcher := &thumbprint.Fetcher{Proxy: http.ProxyURL(proxy.URL), RootCAs: roots}

	const issuerURL = "https://" + iamHost + "/clusters/a"
	const arn = "arn:aws:iam::123456789012:oidc-provider/" + iamHost + "/clusters/a"
	r := oidcprovider.New(client, slog.New(slog.NewTextHandler(io.Discard, nil)))
	desired := func(auds []string, tags map[string]string) oidcprovider.Desired {
		t.Helper()
		res, err := fetcher.Fetch(ctx, issuerURL+"/openid/v1/jwks")
		if err != nil {
			t.Fatal(err)
		}
		return oidcprovider.Desired{URL: issuerURL, Audiences: auds, Thumbprints: []string{res.Thumbprint}, Tags: tags}
	}
	sts := []string{iam.DefaultAudience}

	steps := []struct {
		name   string
		before func()
		auds   []string
		tags   map[string]string
		drift  []string
		want   iamProviderState
	}{
		{
			name: "create", auds: sts, tags: map[string]string{"cluster": "a"},
			drift: []string{oidcprovider.DriftMissing},
			want:  iamProviderState{Audiences: sts, Thumbprints: []string{ca1.thumbprint}, Tags: map[string]string{"cluster": "a"}},
		},
		{
			name: "second run changes nothing", auds: sts, tags: map[string]string{"cluster": "a"},
			want: iamProviderState{Audiences: sts, Thumbprints: []string{ca1.thumbprint}, Tags: map[string]string{"cluster": "a"}},
		},
		{
			name: "CA change adds the new thumbprint and keeps the old", before: func() { srv.chain.Store(ca2) },
			auds: sts, tags: map[string]string{"cluster": "a"},
			drift: []string{oidcprovider.DriftThumbprints},
			want:  iamProviderState{Audiences: sts, Thumbprints: []string{ca2.thumbprint, ca1.thumbprint}, Tags: map[string]string{"cluster": "a"}},
		},
		{
			name: "tag change", auds: sts, tags: map[string]string{"cluster": "a-prod", "team": "platform"},
			drift: []string{oidcprovider.DriftTags},
			want:  iamProviderState{Audiences: sts, Thumbprints: []string{ca2.thumbprint, ca1.thumbprint}, Tags: map[string]string{"cluster": "a-prod", "team": "platform"}},
		},
		{
			name: "audience added", auds: []string{iam.DefaultAudience, "vault.example.com"}, tags: map[string]string{"cluster": "a-prod"},
			drift: []string{oidcprovider.DriftAudiences},
			want:  iamProviderState{Audiences: []string{iam.DefaultAudience, "vault.example.com"}, Thumbprints: []string{ca2.thumbprint, ca1.thumbprint}, Tags: map[string]string{"cluster": "a-prod", "team": "platform"}},
		},
		{
			name: "audience replaced", auds: []string{"vault.example.com"}, tags: map[string]string{"cluster": "a-prod"},
			drift: []string{oidcprovider.DriftAudiences},
			want:  iamProviderState{Audiences: []string{"vault.example.com"}, Thumbprints: []string{ca2.thumbprint, ca1.thumbprint}, Tags: map[string]string{"cluster": "a-prod", "team": "platform"}},
		},
		{
			name: "deleted outside is recreated",
			before: func() {
				if _, err := client.DeleteOpenIDConnectProvider(ctx, &awsiam.DeleteOpenIDConnectProviderInput{OpenIDConnectProviderArn: aws.String(arn)}); err != nil {
					t.Fatal(err)
				}
			},
			auds: []string{"vault.example.com"}, tags: map[string]string{"cluster": "a-prod"},
			drift: []string{oidcprovider.DriftMissing},
			want:  iamProviderState{Audiences: []string{"vault.example.com"}, Thumbprints: []string{ca2.thumbprint}, Tags: map[string]string{"cluster": "a-prod"}},
		},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		p, err := r.Reconcile(ctx, desired(s.auds, s.tags))
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !slices.Equal(p.Drift(), s.drift) {
			t.Errorf("%s: drift %v, want %v; plan:\n%s", s.name, p.Drift(), s.drift, p)
		}
		if p.ARN != arn {
			t.Errorf("%s: ARN %q, want %q", s.name, p.ARN, arn)
		}
		got, ok := getIAMProvider(ctx, t, client, arn)
		if !ok {
			t.Fatalf("%s: provider %s does not exist", s.name, arn)
		}
		s.want.URL = iamHost + "/clusters/a" // IAM reports the URL without scheme
		if got.URL != s.want.URL || !slices.Equal(got.Audiences, s.want.Audiences) ||
			!slices.Equal(got.Thumbprints, s.want.Thumbprints) || fmt.Sprint(got.Tags) != fmt.Sprint(s.want.Tags) {
			t.Errorf("%s: moto has %+v, want %+v", s.name, *got, s.want)
		}
	}
	if arns := listIAMProviders(ctx, t, client); !slices.Equal(arns, []string{arn}) {
		t.Errorf("providers %v, want only %s", arns, arn)
	}

	// Reconcile latency against moto when nothing changes (List + Get), thumbprint fetch apart.
	d := desired([]string{"vault.example.com"}, map[string]string{"cluster": "a-prod"})
	const n = 20
	start := time.Now()
	for range n {
		p, err := r.Reconcile(ctx, d)
		if err != nil || !p.UpToDate() {
			t.Fatalf("no-op reconcile: %v, %v", p, err)
		}
	}
	perReconcile := time.Since(start) / n
	start = time.Now()
	for range n {
		if _, err := fetcher.Fetch(ctx, issuerURL); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("no-op reconcile against moto_server: %s each (mean of %d); thumbprint fetch through the proxy: %s each",
		perReconcile.Round(10*time.Microsecond), n, (time.Since(start) / n).Round(10*time.Microsecond))

	// moto accepts a URL AWS refuses; the reconciler refuses it before calling AWS.
	if _, err := client.CreateOpenIDConnectProvider(ctx, &awsiam.CreateOpenIDConnectProviderInput{
		Url: aws.String("https://" + iamHost + ":8443/x"), ThumbprintList: []string{ca1.thumbprint},
	}); err != nil {
		t.Fatalf("moto refused a URL with a port (it used to accept it; the gap this guards against may be closed): %v", err)
	}
	before := listIAMProviders(ctx, t, client)
	_, err := r.Reconcile(ctx, oidcprovider.Desired{URL: "https://" + iamHost + ":8443/y", Audiences: sts, Thumbprints: []string{ca1.thumbprint}})
	if err == nil || !strings.Contains(err.Error(), "port") {
		t.Errorf("URL with a port: %v, want an error naming the port", err)
	}
	if after := listIAMProviders(ctx, t, client); !slices.Equal(before, after) {
		t.Errorf("providers changed after a refused URL: %v -> %v", before, after)
	}
}

// iamCLI runs the issuer binary with env added to the environment.
func iamCLI(ctx context.Context, t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, shared.issuerBin, args...)
	// A -race binary sleeps 1 s at exit waiting for late reports; races found earlier still fail it.
	cmd.Env = append(append(os.Environ(), "GORACE=atexit_sleep_ms=0"), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// iamProcessEnv points a process's AWS SDK at moto only through the standard variables
// (AWS_ENDPOINT_URL_IAM / _STS), trusts caFile for HTTPS, and proxies HTTPS through proxy.
func iamProcessEnv(t *testing.T, m *harness.Moto, caFile string, proxy *url.URL) []string {
	dir := t.TempDir()
	return []string{
		"AWS_ACCESS_KEY_ID=" + harness.MotoAccessKeyID,
		"AWS_SECRET_ACCESS_KEY=" + harness.MotoSecretAccessKey,
		"AWS_SESSION_TOKEN=",
		"AWS_REGION=" + harness.MotoRegion,
		"AWS_PROFILE=",
		"AWS_CONFIG_FILE=" + filepath.Join(dir, "no-config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "no-credentials"),
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_ENDPOINT_URL=",
		"AWS_ENDPOINT_URL_IAM=" + m.URL,
		"AWS_ENDPOINT_URL_STS=" + m.URL,
		"SSL_CERT_FILE=" + caFile,
		"HTTPS_PROXY=" + proxy.String(),
		"https_proxy=" + proxy.String(),
		"NO_PROXY=",
		"no_proxy=",
	}
}

// TestIAMCommandsWithMoto runs the CLI as a user would, configured only through the environment:
// thumbprint (through HTTPS_PROXY), register --dry-run, register, register again, trust-policy
// (account from STS) accepted by CreateRole and naming exactly the provider register created, and
// iam-policy accepted by CreatePolicy.
func TestIAMCommandsWithMoto(t *testing.T) {
	skipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m, client := startIAMMoto(t)
	chain := newIAMChain(t, "cli")
	srv := startIAMTLSServer(t, chain)
	proxy := startIAMProxy(t, srv.addr)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, chain.root.CertPEM())
	env := iamProcessEnv(t, m, caFile, proxy.URL)
	const issuerURL = "https://" + iamHost + "/clusters/cli"
	const wantARN = "arn:aws:iam::123456789012:oidc-provider/" + iamHost + "/clusters/cli"

	// thumbprint: default port 443, through the proxy from HTTPS_PROXY.
	out, errOut, err := iamCLI(ctx, t, env, "thumbprint", issuerURL+"/openid/v1/jwks")
	if err != nil {
		t.Fatalf("thumbprint: %v\n%s", err, errOut)
	}
	if strings.TrimSpace(out) != chain.thumbprint {
		t.Fatalf("thumbprint printed %q, want the intermediate's %s", out, chain.thumbprint)
	}
	if !slices.Contains(proxy.Asked(), "CONNECT "+iamHost+":443") {
		t.Errorf("proxy saw %v, want CONNECT %s:443", proxy.Asked(), iamHost)
	}
	mustContain(t, errOut, "intermediate")

	// A URL AWS would refuse fails before anything is called.
	_, _, err = iamCLI(ctx, t, env, "register", "--issuer-url", "https://"+iamHost+":8443/clusters/cli")
	if err == nil {
		t.Fatal("register accepted a URL with a port")
	}

	out, errOut, err = iamCLI(ctx, t, env, "register", "--issuer-url", issuerURL, "--tag", "cluster=cli", "--dry-run")
	if err != nil {
		t.Fatalf("register --dry-run: %v\n%s", err, errOut)
	}
	mustContain(t, out, "create OIDC provider "+issuerURL)
	mustContain(t, out, chain.thumbprint)
	mustContain(t, out, "dry run: nothing changed")
	if arns := listIAMProviders(ctx, t, client); len(arns) != 0 {
		t.Fatalf("--dry-run created %v", arns)
	}

	out, errOut, err = iamCLI(ctx, t, env, "register", "--issuer-url", issuerURL, "--tag", "cluster=cli")
	if err != nil {
		t.Fatalf("register: %v\n%s", err, errOut)
	}
	mustContain(t, out, "registered "+wantARN)
	got, ok := getIAMProvider(ctx, t, client, wantARN)
	if !ok || !slices.Equal(got.Thumbprints, []string{chain.thumbprint}) || !slices.Equal(got.Audiences, []string{iam.DefaultAudience}) || got.Tags["cluster"] != "cli" {
		t.Fatalf("after register moto has %+v", got)
	}

	out, errOut, err = iamCLI(ctx, t, env, "register", "--issuer-url", issuerURL, "--tag", "cluster=cli")
	if err != nil {
		t.Fatalf("register again: %v\n%s", err, errOut)
	}
	mustContain(t, out, "OIDC provider "+wantARN+" is up to date")

	// A pinned thumbprint (air-gapped) and a second audience, configured through KUBE_OIDC_ISSUER_*.
	pinned := strings.Repeat("ab", 20)
	out, errOut, err = iamCLI(ctx, t, append(env, "KUBE_OIDC_ISSUER_THUMBPRINT="+strings.ToUpper(pinned), "KUBE_OIDC_ISSUER_AUDIENCE=sts.amazonaws.com,vault"),
		"register", "--issuer-url", issuerURL)
	if err != nil {
		t.Fatalf("register with pinned thumbprint: %v\n%s", err, errOut)
	}
	mustContain(t, out, "audience:    add vault")
	if got, _ := getIAMProvider(ctx, t, client, wantARN); !slices.Equal(got.Thumbprints, []string{pinned, chain.thumbprint}) || !slices.Equal(got.Audiences, []string{iam.DefaultAudience, "vault"}) {
		t.Fatalf("after pinned register moto has %+v", got)
	}

	// trust-policy: the account comes from STS GetCallerIdentity (AWS_ENDPOINT_URL_STS).
	out, errOut, err = iamCLI(ctx, t, env, "trust-policy", "--issuer-url", issuerURL,
		"--service-account", "payments/api", "--service-account", "batch/job-*", "--role-name", "payments")
	if err != nil {
		t.Fatalf("trust-policy: %v\n%s", err, errOut)
	}
	trust := out
	mustContain(t, errOut, "kubectl -n payments annotate serviceaccount api eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/payments")
	var doc iam.PolicyDocument
	if err := json.Unmarshal([]byte(trust), &doc); err != nil {
		t.Fatalf("trust-policy output is not a policy: %v\n%s", err, trust)
	}
	for _, s := range doc.Statement {
		if s.Principal["Federated"] != wantARN {
			t.Errorf("trust policy names %q, register created %q", s.Principal["Federated"], wantARN)
		}
	}
	role, err := client.CreateRole(ctx, &awsiam.CreateRoleInput{RoleName: aws.String("payments"), AssumeRolePolicyDocument: aws.String(trust)})
	if err != nil {
		t.Fatalf("CreateRole refused the trust policy: %v\n%s", err, trust)
	}
	if aws.ToString(role.Role.Arn) != "arn:aws:iam::123456789012:role/payments" {
		t.Errorf("role ARN %s", aws.ToString(role.Role.Arn))
	}
	stored, err := client.GetRole(ctx, &awsiam.GetRoleInput{RoleName: aws.String("payments")})
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := url.QueryUnescape(aws.ToString(stored.Role.AssumeRolePolicyDocument))
	if err != nil {
		t.Fatal(err)
	}
	var storedDoc iam.PolicyDocument
	if err := json.Unmarshal([]byte(decoded), &storedDoc); err != nil || fmt.Sprint(storedDoc) != fmt.Sprint(doc) {
		t.Errorf("stored trust policy differs: %v\n%s", err, decoded)
	}
	if !slices.Contains(listIAMProviders(ctx, t, client), doc.Statement[0].Principal["Federated"]) {
		t.Errorf("the trust policy's principal is not a registered provider")
	}

	// iam-policy: accepted by CreatePolicy.
	out, errOut, err = iamCLI(ctx, t, env, "iam-policy", "--issuer-url", issuerURL, "--account-id", harness.MotoAccountID)
	if err != nil {
		t.Fatalf("iam-policy: %v\n%s", err, errOut)
	}
	mustContain(t, out, wantARN)
	if _, err := client.CreatePolicy(ctx, &awsiam.CreatePolicyInput{PolicyName: aws.String("kube-oidc-issuer"), PolicyDocument: aws.String(out)}); err != nil {
		t.Fatalf("CreatePolicy refused the iam-policy output: %v\n%s", err, out)
	}
}

// TestServeKeepsIAMRegistration runs `serve --iam-register` over TLS, reached under its public
// name through HTTPS_PROXY, with moto as IAM: it registers itself with the thumbprint of its own
// chain, picks up a CA change of its serving certificate (new thumbprint added, old kept),
// recreates a provider deleted behind its back, and reports all that in /metrics and /readyz.
func TestServeKeepsIAMRegistration(t *testing.T) {
	skipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m, client := startIAMMoto(t)
	dir := t.TempDir()
	ca1, ca2 := newIAMChain(t, "serve-1"), newIAMChain(t, "serve-2")
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, append(ca1.root.CertPEM(), ca2.root.CertPEM()...))
	certFile, keyFile, err := ca1.leaf.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, pub, err := pki.GenerateRSAKeyPEM(2048)
	if err != nil {
		t.Fatal(err)
	}
	saKey := filepath.Join(dir, "sa.pub")
	writeFile(t, saKey, pub)

	publicPort, internalPort := freePortPair(t)
	proxy := startIAMProxy(t, net.JoinHostPort("127.0.0.1", fmt.Sprint(publicPort)))
	const issuerURL = "https://" + iamHost + "/clusters/serve"
	const arn = "arn:aws:iam::123456789012:oidc-provider/" + iamHost + "/clusters/serve"
	issuer := startServe(ctx, t, harness.IssuerConfig{
		Args: []string{"--issuer-url", issuerURL, "--key-file", saKey, "--tls-cert-file", certFile, "--tls-key-file", keyFile,
			"--iam-register", "--iam-interval", "1s", "--iam-tag", "cluster=serve"},
		Env:          iamProcessEnv(t, m, caFile, proxy.URL),
		PublicPort:   publicPort,
		InternalPort: internalPort,
		// The default log directory is not next to the watched key file.
	})
	waitProvider := func(what string, cond func(*iamProviderState) bool) time.Duration {
		t.Helper()
		start := time.Now()
		deadline := start.Add(30 * time.Second)
		for {
			if p, ok := getIAMProvider(ctx, t, client, arn); ok && cond(p) {
				return time.Since(start)
			}
			if time.Now().After(deadline) {
				p, _ := getIAMProvider(ctx, t, client, arn)
				t.Fatalf("%s: not within 30s; moto has %+v", what, p)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	took := waitProvider("registered", func(p *iamProviderState) bool {
		return slices.Equal(p.Thumbprints, []string{ca1.thumbprint}) && slices.Equal(p.Audiences, []string{iam.DefaultAudience}) && p.Tags["cluster"] == "serve"
	})
	t.Logf("serve registered itself %s after becoming ready", took.Round(time.Millisecond))

	// CA change: serve reloads its certificate files; the next reconcile adds the new thumbprint.
	leaf2Cert, leaf2Key := filepath.Join(dir, "new.crt"), filepath.Join(dir, "new.key")
	writeFile(t, leaf2Cert, ca2.leaf.CertPEM)
	writeFile(t, leaf2Key, ca2.leaf.KeyPEM)
	changed := time.Now()
	if err := os.Rename(leaf2Key, keyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(leaf2Cert, certFile); err != nil {
		t.Fatal(err)
	}
	waitProvider("CA change", func(p *iamProviderState) bool {
		return slices.Equal(p.Thumbprints, []string{ca2.thumbprint, ca1.thumbprint})
	})
	t.Logf("CA change registered %s after the certificate files changed (interval 1s)", time.Since(changed).Round(time.Millisecond))

	// Deleted behind its back: recreated.
	if _, err := client.DeleteOpenIDConnectProvider(ctx, &awsiam.DeleteOpenIDConnectProviderInput{OpenIDConnectProviderArn: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	waitProvider("recreated", func(p *iamProviderState) bool { return slices.Equal(p.Thumbprints, []string{ca2.thumbprint}) })
	t.Logf("deleted provider recreated after %s", time.Since(deleted).Round(time.Millisecond))

	// What was found shows in the metrics and on /readyz.
	internal := &http.Client{Timeout: 5 * time.Second}
	get := func(path string) []byte {
		t.Helper()
		resp, err := internal.Get(issuer.InternalURL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return b
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		metrics := string(get("/metrics"))
		missing := iamMetric(metrics, `kube_oidc_issuer_iam_drift_total{kind="missing"}`)
		thumbs := iamMetric(metrics, `kube_oidc_issuer_iam_drift_total{kind="thumbprints"}`)
		errs := iamMetric(metrics, "kube_oidc_issuer_iam_reconcile_errors_total")
		last := iamMetric(metrics, "kube_oidc_issuer_iam_reconcile_last_success_timestamp_seconds")
		if missing == "2" && thumbs == "1" && last != "" && last != "0" {
			t.Logf("metrics: drift missing=%s thumbprints=%s, errors=%s", missing, thumbs, errs)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics: missing=%q thumbprints=%q last success=%q", missing, thumbs, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var readyz struct {
		Ready  bool `json:"ready"`
		Checks struct {
			IAM oidcprovider.Status `json:"iam"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(get("/readyz"), &readyz); err != nil {
		t.Fatal(err)
	}
	if !readyz.Ready || readyz.Checks.IAM.ARN != arn || readyz.Checks.IAM.LastSuccess.IsZero() || !slices.Equal(readyz.Checks.IAM.Thumbprints, []string{ca2.thumbprint}) {
		t.Errorf("readyz iam detail: %+v", readyz)
	}
}

func iamMetric(metrics, series string) string {
	for _, l := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			return v
		}
	}
	return ""
}

// TestIAMPolicyActionsSufficeWithMoto runs `register` under IAM authorization in moto
// (INITIAL_NO_AUTH_ACTION_COUNT: moto enforces policies after the setup calls). A user without
// permissions gets the AccessDenied explanation; a user granted exactly the actions `iam-policy`
// prints can create, update thumbprints, add and remove audiences and tag — so the printed action
// list covers every call registration makes. moto evaluates IAM actions against Resource "*" only,
// so the grant uses "*" here: the provider-ARN scoping of the printed policy is AWS's to enforce and
// is not proved by this test.
func TestIAMPolicyActionsSufficeWithMoto(t *testing.T) {
	skipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const setupCalls = 5 // CreateUser ×2, PutUserPolicy, CreateAccessKey ×2
	m, err := harness.StartMoto(ctx, harness.MotoConfig{
		LogPath: filepath.Join(t.TempDir(), "moto.log"), IAMClientIDs: true,
		Env: []string{fmt.Sprintf("INITIAL_NO_AUTH_ACTION_COUNT=%d", setupCalls)},
	})
	if err != nil {
		t.Fatalf("these tests need moto_server (moto 5.x, preinstalled in CI): %v", err)
	}
	t.Cleanup(func() { _ = m.Stop() })
	admin := awsiam.NewFromConfig(m.AWSConfig())

	const issuerURL = "https://" + iamHost + "/clusters/authz"
	const arn = "arn:aws:iam::123456789012:oidc-provider/" + iamHost + "/clusters/authz"
	policyJSON, errOut, err := iamCLI(ctx, t, nil, "iam-policy", "--issuer-url", issuerURL, "--account-id", harness.MotoAccountID)
	if err != nil {
		t.Fatalf("iam-policy: %v\n%s", err, errOut)
	}
	var policy iam.PolicyDocument
	if err := json.Unmarshal([]byte(policyJSON), &policy); err != nil {
		t.Fatal(err)
	}
	for i := range policy.Statement {
		policy.Statement[i].Resource = iam.Values{"*"} // see the test's comment
	}
	granted, err := policy.Render()
	if err != nil {
		t.Fatal(err)
	}

	keys := map[string][2]string{}
	for _, user := range []string{"koi", "nobody"} {
		if _, err := admin.CreateUser(ctx, &awsiam.CreateUserInput{UserName: aws.String(user)}); err != nil {
			t.Fatal(err)
		}
		if user == "koi" {
			if _, err := admin.PutUserPolicy(ctx, &awsiam.PutUserPolicyInput{UserName: aws.String(user), PolicyName: aws.String("register"), PolicyDocument: aws.String(string(granted))}); err != nil {
				t.Fatal(err)
			}
		}
		k, err := admin.CreateAccessKey(ctx, &awsiam.CreateAccessKeyInput{UserName: aws.String(user)})
		if err != nil {
			t.Fatal(err)
		}
		keys[user] = [2]string{aws.ToString(k.AccessKey.AccessKeyId), aws.ToString(k.AccessKey.SecretAccessKey)}
	}
	envFor := func(user string) []string {
		dir := t.TempDir()
		return []string{
			"AWS_ACCESS_KEY_ID=" + keys[user][0], "AWS_SECRET_ACCESS_KEY=" + keys[user][1], "AWS_SESSION_TOKEN=",
			"AWS_REGION=" + harness.MotoRegion, "AWS_PROFILE=", "AWS_EC2_METADATA_DISABLED=true",
			"AWS_CONFIG_FILE=" + filepath.Join(dir, "none"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "none"),
			"AWS_ENDPOINT_URL=", "AWS_ENDPOINT_URL_IAM=" + m.URL,
		}
	}
	tp1, tp2 := strings.Repeat("1", 40), strings.Repeat("2", 40)

	_, errOut, err = iamCLI(ctx, t, envFor("nobody"), "register", "--issuer-url", issuerURL, "--thumbprint", tp1)
	if err == nil {
		t.Fatal("register without permissions succeeded")
	}
	for _, want := range append(iam.RequiredActions(), "AWS denied iam:ListOpenIDConnectProviders while listing OIDC providers",
		"kube-oidc-issuer iam-policy --issuer-url "+issuerURL) {
		mustContain(t, errOut, want)
	}

	runs := []struct {
		name string
		args []string
	}{
		{"create with tags", []string{"--thumbprint", tp1, "--tag", "cluster=authz"}},
		{"read only", []string{"--thumbprint", tp1, "--tag", "cluster=authz"}},
		{"thumbprint, audiences added and removed, tag", []string{"--thumbprint", tp2, "--audience", "vault", "--tag", "cluster=authz-2"}},
	}
	for _, r := range runs {
		_, errOut, err := iamCLI(ctx, t, envFor("koi"), append([]string{"register", "--issuer-url", issuerURL}, r.args...)...)
		if err != nil {
			t.Fatalf("%s: register with the iam-policy actions: %v\n%s", r.name, err, errOut)
		}
	}
	koi := awsiam.NewFromConfig(aws.Config{Region: harness.MotoRegion, BaseEndpoint: aws.String(m.URL),
		Credentials: aws.NewCredentialsCache(staticCredentials(keys["koi"]))})
	got, ok := getIAMProvider(ctx, t, koi, arn)
	if !ok || !slices.Equal(got.Thumbprints, []string{tp2, tp1}) || !slices.Equal(got.Audiences, []string{"vault"}) || got.Tags["cluster"] != "authz-2" {
		t.Fatalf("provider after the runs: %+v", got)
	}
}

// staticCredentials provides a fixed access key.
type staticCredentials [2]string

func (s staticCredentials) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: s[0], SecretAccessKey: s[1], Source: "test"}, nil
}
