package main

import (
	"context"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/doctor"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
)

// TestDoctorCommandValidation: mistakes in the flags are errors before anything is fetched.
func TestDoctorCommandValidation(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	const u = "https://oidc.example.com/c"
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no issuer URL", nil, "--issuer-url is required"},
		{"bad output", []string{"--issuer-url", u, "--output", "yaml"}, `--output "yaml"`},
		{"missing CA file", []string{"--issuer-url", u, "--ca-file", filepath.Join(dir, "nope")}, "reading --ca-file"},
		{"CA file without PEM", []string{"--issuer-url", u, "--ca-file", notPEM}, "holds no PEM certificate"},
		{"missing token file", []string{"--issuer-url", u, "--token", filepath.Join(dir, "nope")}, "reading --token"},
		{"empty token file", []string{"--issuer-url", u, "--token", empty}, "is empty"},
		{"file mirror", []string{"--issuer-url", u, "--mirror", "file:///srv/www"}, "s3:// mirrors only"},
		{"mirror not matching an S3 issuer URL", []string{"--issuer-url", "https://s3.eu-west-1.amazonaws.com/aaa", "--mirror", "s3://bbb"}, "does not match"},
		{"signing Secret without namespace", []string{"--issuer-url", u, "--signing-secret", "cluster-sa"}, `--signing-secret "cluster-sa": want NAMESPACE/NAME`},
		{"probe ServiceAccount with extra slash", []string{"--issuer-url", u, "--signing-probe-service-account", "a/b/c"}, `--signing-probe-service-account "a/b/c": want NAMESPACE/NAME`},
		{"no probes", []string{"--issuer-url", u, "--signing-probe-count", "0"}, "--signing-probe-count 0: want at least 1"},
		{"missing kubeconfig", []string{"--issuer-url", u, "--kubeconfig", filepath.Join(dir, "nope")}, "--kubeconfig " + filepath.Join(dir, "nope") + ": "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, "", append([]string{"doctor"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestDoctorMirrorURLs: the objects are looked up where serve --mirror puts them.
func TestDoctorMirrorURLs(t *testing.T) {
	t.Setenv("AWS_ENDPOINT_URL_S3", "")
	t.Setenv("AWS_ENDPOINT_URL", "")
	t.Setenv("AWS_REGION", "")
	tests := []struct {
		name      string
		o         doctorOptions
		target    string
		wantDisco string
	}{
		{"path-style AWS issuer URL", doctorOptions{issuerURL: "https://s3.eu-west-1.amazonaws.com/bkt/c1"}, "s3://bkt",
			"https://s3.eu-west-1.amazonaws.com/bkt/c1/.well-known/openid-configuration"},
		{"virtual-hosted AWS issuer URL", doctorOptions{issuerURL: "https://bkt.s3.eu-west-1.amazonaws.com/c1"}, "s3://bkt",
			"https://bkt.s3.eu-west-1.amazonaws.com/c1/.well-known/openid-configuration"},
		{"custom domain, region flag", doctorOptions{issuerURL: "https://oidc.example.com/clusters/p", s3Region: "us-west-2"}, "s3://bkt/pre",
			"https://bkt.s3.us-west-2.amazonaws.com/pre/clusters/p/.well-known/openid-configuration"},
		{"S3-compatible endpoint, path style", doctorOptions{issuerURL: "https://oidc.example.com/p", s3Endpoint: "http://127.0.0.1:9000", s3PathStyle: true}, "s3://bkt",
			"http://127.0.0.1:9000/bkt/p/.well-known/openid-configuration"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.o.mirror(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			if m.DiscoveryURL != tc.wantDisco {
				t.Errorf("discovery at %s, want %s", m.DiscoveryURL, tc.wantDisco)
			}
			if want := strings.Replace(tc.wantDisco, ".well-known/openid-configuration", "openid/v1/jwks", 1); m.JWKSURL != want {
				t.Errorf("JWKS at %s, want %s", m.JWKSURL, want)
			}
		})
	}
}

// fakeMinter hands out canned answers in turn, standing in for the TokenRequest API behind the
// signingprobe.Minter seam.
type fakeMinter struct {
	mu      sync.Mutex
	answers []mintAnswer
	calls   int
}

type mintAnswer struct {
	token string
	err   error
}

func (m *fakeMinter) Mint(context.Context) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.answers[m.calls%len(m.answers)]
	m.calls++
	return a.token, a.err
}

// probeToken is a compact JWS with the given header and a dummy payload and signature: the probe
// reads the header only.
func probeToken(header string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(header)) + "." + enc([]byte(`{"sub":"system:serviceaccount:probe-ns:probe-sa"}`)) + ".c2ln"
}

// TestDoctorSigningProbe: the kids the probes saw, and each failure classified the way the
// control-plane-signing check names its fix; the token never appears in an error.
func TestDoctorSigningProbe(t *testing.T) {
	sa := schema.GroupResource{Resource: "serviceaccounts"}
	forbidden := apierrors.NewForbidden(sa, "probe-sa", errors.New(`User "doctor" cannot create resource "serviceaccounts/token"`))
	notFound := apierrors.NewNotFound(sa, "probe-sa")
	unreachable := &url.Error{Op: "Post", URL: "https://127.0.0.1:1/api/v1/namespaces/probe-ns/serviceaccounts/probe-sa/token", Err: errors.New("connect: connection refused")}
	tokA, tokB := probeToken(`{"alg":"RS256","kid":"kid-a"}`), probeToken(`{"alg":"ES256","kid":"kid-b"}`)
	noKID := probeToken(`{"alg":"RS256"}`)
	tests := []struct {
		name       string
		answers    []mintAnswer
		wantKIDs   []string
		wantReason doctor.KubeErrorReason // of a *doctor.KubeError; "" for another error
		wantErr    string
	}{
		{"one key", []mintAnswer{{token: tokA}}, []string{"kid-a"}, "", ""},
		{"two apiservers with different keys", []mintAnswer{{token: tokB}, {token: tokA}, {token: tokB}}, []string{"kid-a", "kid-b"}, "", ""},
		{"one probe fails, the others answer", []mintAnswer{{err: unreachable}, {token: tokA}, {token: tokA}}, []string{"kid-a"}, "", ""},
		{"forbidden", []mintAnswer{{err: forbidden}}, nil, doctor.KubeForbidden, forbidden.Error()},
		{"ServiceAccount not found", []mintAnswer{{err: notFound}}, nil, doctor.KubeNotFound, `serviceaccounts "probe-sa" not found`},
		{"unauthorized", []mintAnswer{{err: apierrors.NewUnauthorized("Unauthorized")}}, nil, doctor.KubeUnauthorized, "Unauthorized"},
		{"unreachable", []mintAnswer{{err: unreachable}}, nil, doctor.KubeUnreachable, unreachable.Error()},
		{"deadline", []mintAnswer{{err: fmt.Errorf("requesting a token: %w", context.DeadlineExceeded)}}, nil, doctor.KubeUnreachable, "requesting a token: context deadline exceeded"},
		{"other API error", []mintAnswer{{err: apierrors.NewInternalError(errors.New("etcd down"))}}, nil, "", "Internal error occurred: etcd down"},
		{"token without kid", []mintAnswer{{token: noKID}}, nil, "", "unreadable probe token: token header has no kid (the API server signs with a key it cannot name)"},
		{"not a token", []mintAnswer{{token: "s3cr3t-not-a-jws"}}, nil, "", "unreadable probe token: token is not a compact JWS (want three dot-separated parts)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &fakeMinter{answers: tc.answers}
			p := kubeSigningProbe{minter: m, serviceAccount: "probe-ns/probe-sa", count: 3, timeout: time.Second}
			kids, err := p.SigningKIDs(context.Background())
			if m.calls != 3 {
				t.Errorf("minted %d tokens, want 3", m.calls)
			}
			if !slices.Equal(kids, tc.wantKIDs) {
				t.Errorf("kids %q, want %q", kids, tc.wantKIDs)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err == nil || err.Error() != tc.wantErr {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			var ke *doctor.KubeError
			var reason doctor.KubeErrorReason // "": not a *doctor.KubeError
			if errors.As(err, &ke) {
				reason = ke.Reason
			}
			if reason != tc.wantReason {
				t.Errorf("reason %q, want %q (%T)", reason, tc.wantReason, err)
			}
			for _, a := range tc.answers {
				if a.token != "" && strings.Contains(err.Error(), a.token) {
					t.Errorf("the error quotes the token: %v", err)
				}
			}
		})
	}
}

// TestDoctorActiveKIDs: the Secret's active keys are the ones whose private half it holds, in
// every layout kubesource reads; public-only keys are not.
func TestDoctorActiveKIDs(t *testing.T) {
	type pair struct{ priv, pub []byte }
	gen := func() pair {
		priv, pub, err := pki.GenerateECDSAKeyPEM(elliptic.P256())
		if err != nil {
			t.Fatal(err)
		}
		return pair{priv, pub}
	}
	kid := func(p pair) string {
		b, _ := pem.Decode(p.pub)
		sum := sha256.Sum256(b.Bytes)
		return base64.RawURLEncoding.EncodeToString(sum[:])
	}
	next, prev := gen(), gen()
	bundle := append(slices.Clone(next.pub), prev.pub...)
	tests := []struct {
		name    string
		data    map[string][]byte
		want    []string
		wantErr string
	}{
		{"Cluster API, bundle with the previous key", map[string][]byte{"tls.crt": bundle, "tls.key": next.priv}, []string{kid(next)}, ""},
		{"kubeadm", map[string][]byte{"sa.pub": next.pub, "sa.key": next.priv}, []string{kid(next)}, ""},
		{"OpenShift", map[string][]byte{"service-account.pub": next.pub, "service-account.key": next.priv}, []string{kid(next)}, ""},
		{"public keys only", map[string][]byte{"tls.crt": bundle}, nil, ""},
		{"no key entry", map[string][]byte{"ca.crt": next.pub}, nil, "secret kube-system/cluster-sa holds no service-account key entry"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := activeKIDs(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "cluster-sa"}, Data: tc.data})
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("active kids %q, want %q", got, tc.want)
			}
		})
	}
}

// TestDoctorSigningCheckWiring runs the command: --kubeconfig (or its environment variable)
// enables control-plane-signing, which reports a kube-apiserver nobody listens for as unreachable;
// without it the check is skipped.
func TestDoctorSigningCheckWiring(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://`+closed+`
    insecure-skip-tls-verify: true
users:
- name: u
  user:
    token: t
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"doctor", "--output", "json", "--timeout", "1s", "--issuer-url", "https://" + closed + "/c"}
	tests := []struct {
		name       string
		args       []string
		env        string // KUBE_OIDC_ISSUER_KUBECONFIG
		wantStatus doctor.Status
		wantDetail string // prefix
	}{
		{"no kubeconfig", nil, "", doctor.Skip, "no --kubeconfig given"},
		{"flag", []string{"--kubeconfig", kubeconfig, "--signing-secret", "kube-system/cluster-sa"}, "", doctor.Fail, "cannot mint a probe token (unreachable): requesting a token for ServiceAccount default/default: "},
		{"environment", []string{"--signing-probe-service-account", "probe-ns/probe-sa", "--signing-probe-count", "1"}, kubeconfig, doctor.Fail, "cannot mint a probe token (unreachable): requesting a token for ServiceAccount probe-ns/probe-sa: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvName("kubeconfig"), tc.env)
			if tc.env == "" {
				os.Unsetenv(EnvName("kubeconfig"))
			}
			out, _, err := run(t, "", append(slices.Clone(args), tc.args...)...)
			if !errors.Is(err, errChecksFailed) {
				t.Fatalf("err = %v, want the checks to fail (nothing listens at the issuer URL)", err)
			}
			var rep doctor.Report
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			r, _ := rep.Result("control-plane-signing")
			if r.Status != tc.wantStatus || !strings.HasPrefix(r.Detail, tc.wantDetail) {
				t.Fatalf("control-plane-signing = %+v, want %s %q…", r, tc.wantStatus, tc.wantDetail)
			}
			if tc.wantStatus == doctor.Fail && r.Fix != "check the --kubeconfig server URL and CA, and the network path to kube-apiserver" {
				t.Errorf("fix %q", r.Fix)
			}
		})
	}
}
