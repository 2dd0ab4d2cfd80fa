package thumbprint

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // the thumbprint under test is SHA-1
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
)

// issuerHost is the name the tests fetch; a dialer (or the test proxy) maps it to a local server,
// so SNI and the default port are observable without DNS.
const issuerHost = "issuer.example.test"

func sha1Hex(c *x509.Certificate) string {
	sum := sha1.Sum(c.Raw) //nolint:gosec
	return hex.EncodeToString(sum[:])
}

// chains are the certificate chains a server may present, built once for all tests.
type chains struct {
	root, inter                 *pki.CA
	leafInter, leafInterRoot    tls.Certificate
	leafOnly, selfSignedLeaf    tls.Certificate
	selfSignedCert, leafOnlyCrt *x509.Certificate
}

func newChains(t *testing.T) *chains {
	t.Helper()
	root, err := pki.NewCA("thumbprint test root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("thumbprint test intermediate")
	if err != nil {
		t.Fatal(err)
	}
	viaInter, err := inter.IssueServer(issuerHost, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	direct, err := root.IssueServer(issuerHost, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	c := &chains{root: root, inter: inter, leafOnlyCrt: direct.Certificate}
	// leaf + intermediate: what pki puts in CertPEM (the root is not sent).
	c.leafInter = keyPair(t, viaInter.CertPEM, viaInter.KeyPEM)
	// leaf + intermediate + root: some servers send the root too.
	c.leafInterRoot = keyPair(t, append(append([]byte(nil), viaInter.CertPEM...), root.CertPEM()...), viaInter.KeyPEM)
	// leaf alone, issued by the root.
	c.leafOnly = keyPair(t, direct.CertPEM, direct.KeyPEM)
	c.selfSignedLeaf, c.selfSignedCert = selfSignedPair(t)
	return c
}

func keyPair(t *testing.T, certPEM, keyPEM []byte) tls.Certificate {
	t.Helper()
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// selfSignedPair is a server certificate that signs itself: no CA flag, one certificate.
func selfSignedPair(t *testing.T) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: issuerHost},
		DNSNames:     []string{issuerHost},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, cert
}

// tlsServer is a TLS listener on 127.0.0.1 that completes handshakes with one certificate chain
// and records the SNI of each.
type tlsServer struct {
	addr string
	mu   sync.Mutex
	sni  []string
}

func startTLS(t *testing.T, cert tls.Certificate) *tlsServer {
	t.Helper()
	s := &tlsServer{}
	cfg := &tls.Config{
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			s.mu.Lock()
			s.sni = append(s.sni, hello.ServerName)
			s.mu.Unlock()
			return &cert, nil
		},
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_ = c.(*tls.Conn).Handshake()
				_, _ = io.Copy(io.Discard, c) // until the client hangs up
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return s
}

func (s *tlsServer) lastSNI() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sni) == 0 {
		return ""
	}
	return s.sni[len(s.sni)-1]
}

// dialTo sends every connection to addr, recording the address asked for.
func dialTo(addr string, asked *[]string) func(ctx context.Context, network, address string) (net.Conn, error) {
	var mu sync.Mutex
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		mu.Lock()
		*asked = append(*asked, address)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

func noProxy(*http.Request) (*url.URL, error) { return nil, nil }

// TestFetchChains: the thumbprint is the SHA-1 of the last certificate presented, whatever the
// chain looks like; SNI is the host name and the default port 443.
func TestFetchChains(t *testing.T) {
	c := newChains(t)
	tests := []struct {
		name     string
		cert     tls.Certificate
		want     *x509.Certificate // the certificate whose SHA-1 is expected
		chainLen int
		leafOnly bool
		wantErr  error
	}{
		{name: "leaf+intermediate", cert: c.leafInter, want: c.inter.Certificate(), chainLen: 2},
		{name: "leaf+intermediate+root", cert: c.leafInterRoot, want: c.root.Certificate(), chainLen: 3},
		{name: "leaf only", cert: c.leafOnly, want: c.leafOnlyCrt, chainLen: 1, leafOnly: true},
		{name: "single self-signed", cert: c.selfSignedLeaf, want: c.selfSignedCert, chainLen: 1, leafOnly: true, wantErr: ErrSelfSigned},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startTLS(t, tt.cert)
			var asked []string
			f := &Fetcher{Proxy: noProxy, RootCAs: c.root.Pool(), DialContext: dialTo(srv.addr, &asked)}
			res, err := f.Fetch(t.Context(), "https://"+issuerHost+"/clusters/prod-1")
			if tt.wantErr != nil {
				var ce *CertificateError
				if !errors.Is(err, tt.wantErr) || !errors.As(err, &ce) {
					t.Fatalf("error %v, want a *CertificateError with %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "--thumbprint "+sha1Hex(tt.want)) {
					t.Errorf("error does not say how to pin: %v", err)
				}
				res = ce.Result
			} else if err != nil {
				t.Fatal(err)
			}
			if got, want := res.Thumbprint, sha1Hex(tt.want); got != want {
				t.Errorf("thumbprint %s, want %s (SHA-1 of %q)", got, want, tt.want.Subject)
			}
			if len(res.Chain) != tt.chainLen || res.LeafOnly() != tt.leafOnly {
				t.Errorf("chain of %d, leafOnly %v; want %d, %v", len(res.Chain), res.LeafOnly(), tt.chainLen, tt.leafOnly)
			}
			if len(asked) != 1 || asked[0] != issuerHost+":443" {
				t.Errorf("dialled %v, want [%s:443]", asked, issuerHost)
			}
			if got := srv.lastSNI(); got != issuerHost {
				t.Errorf("SNI %q, want %q", got, issuerHost)
			}
		})
	}
}

// TestFetchMatchesOpenSSL: the thumbprint equals what the manual procedure AWS documents yields
// (openssl s_client -showcerts, last certificate, openssl x509 -fingerprint -sha1).
func TestFetchMatchesOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed; TestFetchChains covers the same with crypto/sha1")
	}
	c := newChains(t)
	for name, cert := range map[string]tls.Certificate{"leaf+intermediate": c.leafInter, "leaf+intermediate+root": c.leafInterRoot} {
		t.Run(name, func(t *testing.T) {
			srv := startTLS(t, cert)
			f := &Fetcher{Proxy: noProxy, RootCAs: c.root.Pool()}
			res, err := f.Fetch(t.Context(), srv.addr) // bare HOST:PORT; 127.0.0.1 is a SAN
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.CommandContext(t.Context(), "openssl", "s_client", "-connect", srv.addr,
				"-servername", issuerHost, "-showcerts").CombinedOutput()
			if err != nil {
				t.Fatalf("openssl s_client: %v\n%s", err, out)
			}
			pems := strings.SplitAfter(string(out), "-----END CERTIFICATE-----")
			lastPEM := pems[len(pems)-2]
			lastPEM = lastPEM[strings.Index(lastPEM, "-----BEGIN CERTIFICATE-----"):]
			block, _ := pem.Decode([]byte(lastPEM))
			if block == nil {
				t.Fatalf("no certificate in openssl output:\n%s", out)
			}
			x := exec.CommandContext(t.Context(), "openssl", "x509", "-noout", "-fingerprint", "-sha1")
			x.Stdin = strings.NewReader(lastPEM)
			fp, err := x.Output()
			if err != nil {
				t.Fatal(err)
			}
			// "SHA1 Fingerprint=AB:CD:..."
			_, hexColons, _ := strings.Cut(strings.TrimSpace(string(fp)), "=")
			want := strings.ToLower(strings.ReplaceAll(hexColons, ":", ""))
			if res.Thumbprint != want {
				t.Errorf("thumbprint %s, openssl says %s", res.Thumbprint, want)
			}
		})
	}
}

// TestFetchThroughProxy: with a proxy configured the fetch tunnels with CONNECT HOST:443 and still
// sends SNI; proxy credentials are sent; a refusing proxy is ErrUnreachable.
func TestFetchThroughProxy(t *testing.T) {
	c := newChains(t)
	srv := startTLS(t, c.leafInter)
	routes := map[string]string{issuerHost + ":443": srv.addr}
	tests := []struct {
		name       string
		user, pass string // the proxy demands these
		sendPass   string // what the client sends
		wantErr    error
	}{
		{name: "open proxy"},
		{name: "proxy with credentials", user: "koi", pass: "s3cret", sendPass: "s3cret"},
		{name: "wrong proxy credentials", user: "koi", pass: "s3cret", sendPass: "wrong", wantErr: ErrUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := harness.StartConnectProxy(routes, tt.user, tt.pass)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })
			proxyURL := *p.URL
			if tt.user != "" {
				proxyURL.User = url.UserPassword(tt.user, tt.sendPass)
			}
			f := &Fetcher{Proxy: http.ProxyURL(&proxyURL), RootCAs: c.root.Pool()}
			res, err := f.Fetch(t.Context(), "https://"+issuerHost+"/cluster")
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), "407") {
					t.Fatalf("error %v, want %v naming the proxy's answer", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), tt.sendPass) {
					t.Errorf("error leaks the proxy password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Thumbprint != sha1Hex(c.inter.Certificate()) {
				t.Errorf("thumbprint %s, want the intermediate's %s", res.Thumbprint, sha1Hex(c.inter.Certificate()))
			}
			if got := srv.lastSNI(); got != issuerHost {
				t.Errorf("SNI %q through the proxy, want %q", got, issuerHost)
			}
			if asked := p.Asked(); len(asked) != 1 || asked[0] != "CONNECT "+issuerHost+":443" {
				t.Errorf("proxy saw %v, want [CONNECT %s:443]", asked, issuerHost)
			}
			if res.Proxy == "" || strings.Contains(res.Proxy, "s3cret") {
				t.Errorf("Result.Proxy %q: want the proxy, without its password", res.Proxy)
			}
		})
	}
}

// TestFetchErrors: each way a fetch fails is told apart, and says what was being done.
func TestFetchErrors(t *testing.T) {
	c := newChains(t)
	good := startTLS(t, c.leafInter)
	otherRoot, err := pki.NewCA("some other root")
	if err != nil {
		t.Fatal(err)
	}

	// A port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	// A plain-HTTP server: the classic "wrong port".
	plain := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: time.Second}
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = plain.Serve(pln) }()
	t.Cleanup(func() { _ = plain.Close() })

	// A server that accepts and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })

	tests := []struct {
		name    string
		target  string
		roots   *x509.CertPool
		timeout time.Duration
		wantErr error  // nil: any error
		want    string // in the message
	}{
		{name: "connection refused", target: "https://" + closedAddr, wantErr: ErrUnreachable, want: "connecting to " + closedAddr},
		{name: "unknown host", target: "https://no-such-host.invalid/x", wantErr: ErrUnreachable, want: "no-such-host.invalid:443"},
		{name: "plain HTTP port", target: pln.Addr().String(), wantErr: ErrTLS, want: "is it an HTTPS port"},
		{name: "no TLS answer", target: silent.Addr().String(), timeout: 300 * time.Millisecond, wantErr: ErrTLS, want: "no TLS answer within 300ms"},
		{name: "unknown CA", target: good.addr, roots: otherRoot.Pool(), wantErr: ErrUntrusted, want: "SSL_CERT_FILE"},
		{name: "wrong host name", target: "localhost:" + strings.Split(good.addr, ":")[1], roots: c.root.Pool(), wantErr: ErrUntrusted, want: "localhost"},
		{name: "http URL", target: "http://" + good.addr, want: "want an https URL"},
		{name: "no host", target: "https:///x", want: "no host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &Fetcher{Proxy: noProxy, RootCAs: tt.roots, Timeout: tt.timeout}
			if f.RootCAs == nil {
				f.RootCAs = c.root.Pool()
			}
			res, err := f.Fetch(t.Context(), tt.target)
			if err == nil {
				t.Fatalf("no error; result %+v", res)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v, want %v", err, tt.wantErr)
			}
			for _, other := range []error{ErrUnreachable, ErrTLS, ErrUntrusted, ErrSelfSigned} {
				if other != tt.wantErr && errors.Is(err, other) {
					t.Errorf("error %v is also %v", err, other)
				}
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			var ce *CertificateError
			if errors.As(err, &ce) && ce.Result.Thumbprint != sha1Hex(c.inter.Certificate()) {
				t.Errorf("untrusted chain reported with thumbprint %s, want %s", ce.Result.Thumbprint, sha1Hex(c.inter.Certificate()))
			}
		})
	}
}

// TestFetchLimitsAreNotNetworkErrors: a timeout that cannot work, or a context that ended before
// anything was sent, is the caller's mistake: it is reported as such, without dialing, and never
// as ErrUnreachable ("i/o timeout"), which would send an operator looking at DNS and firewalls.
func TestFetchLimitsAreNotNetworkErrors(t *testing.T) {
	expired, cancel := context.WithTimeout(t.Context(), 0)
	defer cancel()
	canceled, cancel2 := context.WithCancel(t.Context())
	cancel2()
	tests := []struct {
		name    string
		ctx     context.Context
		timeout time.Duration
		wantErr error
		want    string
	}{
		{name: "negative timeout", ctx: t.Context(), timeout: -time.Second,
			want: "thumbprint of oidc.example.com: the timeout -1s must not be negative"},
		{name: "deadline already passed", ctx: expired, wantErr: context.DeadlineExceeded,
			want: "thumbprint of oidc.example.com:443: gave up before connecting: context deadline exceeded"},
		{name: "canceled", ctx: canceled, wantErr: context.Canceled,
			want: "thumbprint of oidc.example.com:443: gave up before connecting: context canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dialed := false
			f := &Fetcher{Proxy: noProxy, Timeout: tt.timeout, DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				dialed = true
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("%s: i/o timeout", addr)}
			}}
			_, err := f.Fetch(tt.ctx, "oidc.example.com")
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error %v, want %s", err, tt.want)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v is not %v", err, tt.wantErr)
			}
			if errors.Is(err, ErrUnreachable) || errors.Is(err, ErrTLS) {
				t.Errorf("error %v blames the host", err)
			}
			if dialed {
				t.Error("dialed although the fetch could not succeed")
			}
		})
	}
}
