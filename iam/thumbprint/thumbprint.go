// Package thumbprint computes the certificate thumbprint AWS IAM keeps for an OpenID Connect
// provider: the hex SHA-1 of the last certificate the TLS server presents (the top intermediate or
// the root of the chain it sends), fetched the way STS reaches the host: SNI with the host name,
// port 443 unless the URL names another, through the proxy the environment configures.
package thumbprint

import (
	"bufio"
	"context"
	"crypto/sha1" //nolint:gosec // AWS IAM defines the thumbprint as a SHA-1 fingerprint
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultTimeout bounds one fetch (connect, proxy CONNECT, TLS handshake) when the context has no
// earlier deadline.
const DefaultTimeout = 10 * time.Second

// Error classes a fetch can fail with; test them with errors.Is.
var (
	// ErrUnreachable: the host (or the proxy) could not be resolved or connected to, or the proxy
	// refused the tunnel.
	ErrUnreachable = errors.New("host unreachable")
	// ErrTLS: the TCP connection worked but no TLS handshake completed (not a TLS port, protocol
	// mismatch, timeout).
	ErrTLS = errors.New("TLS handshake failed")
	// ErrUntrusted: the handshake completed but the presented chain does not verify for the host
	// against the trusted roots (unknown CA, wrong host name, expired). Comes as a *CertificateError.
	ErrUntrusted = errors.New("certificate chain not trusted")
	// ErrSelfSigned: the server presents one self-signed certificate and no CA at all. Comes as a
	// *CertificateError.
	ErrSelfSigned = errors.New("single self-signed certificate")
)

// CertificateError is returned when the handshake completed but the presented chain is not one to
// register without a decision by a person. Result holds what was presented, with its thumbprint,
// so that the person can pin it knowingly.
type CertificateError struct {
	// Reason is ErrUntrusted or ErrSelfSigned.
	Reason error
	Result *Result
	// Err is the verification error, if any.
	Err error
}

func (e *CertificateError) Error() string {
	host := e.Result.Host
	tp := e.Result.Thumbprint
	if errors.Is(e.Reason, ErrSelfSigned) {
		return fmt.Sprintf("%s presents a single self-signed certificate (subject %q, SHA-1 %s) and no CA: "+
			"AWS STS could trust it only through this thumbprint, and every re-issue of the certificate would "+
			"break token exchange until the provider is updated; serve a CA-issued certificate chain, "+
			"or pin this certificate deliberately with --thumbprint %s", host, e.Result.Certificate.Subject.String(), tp, tp)
	}
	return fmt.Sprintf("the certificate chain %s presents is not trusted here (%v); the last certificate it presents "+
		"(subject %q) has SHA-1 %s. If the host uses a private CA, trust it (SSL_CERT_FILE); if you have checked "+
		"this chain another way, pin the thumbprint with --thumbprint %s", host, e.Err, e.Result.Certificate.Subject.String(), tp, tp)
}

// Unwrap lets errors.Is find the Reason and the verification error.
func (e *CertificateError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Reason}
	}
	return []error{e.Reason, e.Err}
}

// Result is what one fetch found.
type Result struct {
	// Thumbprint is the lower-case hex SHA-1 of Certificate: what IAM stores.
	Thumbprint string
	// Certificate is the last certificate the server presented.
	Certificate *x509.Certificate
	// Chain is every certificate presented, the server's own first.
	Chain []*x509.Certificate
	// Host is the host name (sent as SNI) and Address the host:port connected to.
	Host, Address string
	// Proxy is the proxy tunnelled through (without credentials), empty for a direct connection.
	Proxy string
}

// LeafOnly reports whether the server presented only its own certificate, not a CA: then the
// thumbprint changes at every renewal of that certificate.
func (r *Result) LeafOnly() bool {
	return len(r.Chain) == 1 && !r.Chain[0].IsCA
}

// Fetcher connects to TLS servers and computes their thumbprints. The zero value is ready to use:
// proxies from the environment, system roots, DefaultTimeout.
type Fetcher struct {
	// Proxy chooses the proxy for a request to https://HOST:PORT/ (nil result: connect directly).
	// Nil means http.ProxyFromEnvironment: HTTPS_PROXY / https_proxy, NO_PROXY.
	Proxy func(*http.Request) (*url.URL, error)
	// RootCAs are trusted to verify the presented chain (and an https proxy's certificate). Nil
	// means the system roots, which honour SSL_CERT_FILE and SSL_CERT_DIR.
	RootCAs *x509.CertPool
	// Timeout bounds a fetch when ctx has no earlier deadline; zero means DefaultTimeout, and a
	// negative value is an error.
	Timeout time.Duration
	// DialContext opens TCP connections (to the host or the proxy); nil means a net.Dialer.
	DialContext func(ctx context.Context, network, address string) (net.Conn, error)
}

// Fetch connects to the host of target and returns the thumbprint of the last certificate the
// host presents. target is an https URL (its path is ignored; port 443 unless given) or a bare
// HOST[:PORT].
//
// A chain that does not verify, or a single self-signed certificate, is a *CertificateError
// carrying the Result: AWS would register such a thumbprint, but nobody should do so by accident.
func (f *Fetcher) Fetch(ctx context.Context, target string) (*Result, error) {
	host, port, err := splitTarget(target)
	if err != nil {
		return nil, err
	}
	timeout := f.Timeout
	switch {
	case timeout < 0:
		return nil, fmt.Errorf("thumbprint of %s: the timeout %s must not be negative", target, timeout)
	case timeout == 0:
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	addr := net.JoinHostPort(host, port)
	// A context that ended before anything was sent is the caller's limit, not the host's fault:
	// dialing would fail at once and be reported as ErrUnreachable ("i/o timeout").
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("thumbprint of %s: gave up before connecting: %w", addr, context.Cause(ctx))
	}
	res := &Result{Host: host, Address: addr}
	conn, err := f.connect(ctx, res)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// Reads and writes stop when ctx ends, whatever stage the exchange is in.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()

	tc := tls.Client(conn, &tls.Config{
		ServerName: host,
		MinVersion: tls.VersionTLS12,
		// The chain is verified below, after the handshake, so that a chain that fails
		// verification can still be reported with its thumbprint.
		InsecureSkipVerify: true, //nolint:gosec // verified explicitly in verify
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = fmt.Errorf("no TLS answer within %s: %w", timeout, ctxErr)
		}
		return nil, fmt.Errorf("%w with %s%s (is it an HTTPS port?): %w", ErrTLS, addr, via(res), err)
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w with %s%s: the server presented no certificate", ErrTLS, addr, via(res))
	}
	last := certs[len(certs)-1]
	sum := sha1.Sum(last.Raw) //nolint:gosec // IAM's definition of a thumbprint
	res.Thumbprint = hex.EncodeToString(sum[:])
	res.Certificate = last
	res.Chain = certs

	if len(certs) == 1 && selfSigned(last) {
		return nil, &CertificateError{Reason: ErrSelfSigned, Result: res}
	}
	if err := f.verify(host, certs); err != nil {
		return nil, &CertificateError{Reason: ErrUntrusted, Result: res, Err: err}
	}
	return res, nil
}

// splitTarget returns the host and port of an https URL or a bare HOST[:PORT].
func splitTarget(target string) (host, port string, err error) {
	raw := target
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", fmt.Errorf("thumbprint target %q: %w", target, err)
	}
	if u.Scheme != "https" {
		return "", "", fmt.Errorf("thumbprint target %q: want an https URL or HOST[:PORT]", target)
	}
	host, port = u.Hostname(), u.Port()
	if host == "" {
		return "", "", fmt.Errorf("thumbprint target %q has no host", target)
	}
	if port == "" {
		port = "443"
	}
	return host, port, nil
}

// connect opens a TCP connection to res.Address, directly or through a CONNECT tunnel.
func (f *Fetcher) connect(ctx context.Context, res *Result) (net.Conn, error) {
	proxyFor := f.Proxy
	if proxyFor == nil {
		proxyFor = http.ProxyFromEnvironment
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+res.Address+"/", nil)
	if err != nil {
		return nil, fmt.Errorf("building request for %s: %w", res.Address, err)
	}
	proxy, err := proxyFor(req)
	if err != nil {
		return nil, fmt.Errorf("choosing proxy for %s (check HTTPS_PROXY/NO_PROXY): %w", res.Address, err)
	}
	if proxy == nil {
		conn, err := f.dial(ctx, res.Address)
		if err != nil {
			return nil, fmt.Errorf("%w: connecting to %s: %w", ErrUnreachable, res.Address, err)
		}
		return conn, nil
	}
	res.Proxy = proxy.Redacted()
	return f.tunnel(ctx, proxy, res)
}

func (f *Fetcher) dial(ctx context.Context, addr string) (net.Conn, error) {
	if f.DialContext != nil {
		return f.DialContext(ctx, "tcp", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// tunnel connects to proxy and asks it for a CONNECT tunnel to res.Address.
func (f *Fetcher) tunnel(ctx context.Context, proxy *url.URL, res *Result) (net.Conn, error) {
	port := proxy.Port()
	switch proxy.Scheme {
	case "http":
		if port == "" {
			port = "80"
		}
	case "https":
		if port == "" {
			port = "443"
		}
	default:
		return nil, fmt.Errorf("proxy %s for %s: scheme %q is not supported (use http:// or https://)", res.Proxy, res.Address, proxy.Scheme)
	}
	proxyAddr := net.JoinHostPort(proxy.Hostname(), port)
	conn, err := f.dial(ctx, proxyAddr)
	if err != nil {
		return nil, fmt.Errorf("%w: connecting to proxy %s for %s: %w", ErrUnreachable, res.Proxy, res.Address, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if proxy.Scheme == "https" {
		tc := tls.Client(conn, &tls.Config{ServerName: proxy.Hostname(), RootCAs: f.RootCAs, MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("%w: TLS with proxy %s: %w", ErrUnreachable, res.Proxy, err)
		}
		conn = tc
	}

	connectReq := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: res.Address},
		Host:   res.Address,
		Header: make(http.Header),
	}
	if u := proxy.User; u != nil {
		pass, _ := u.Password()
		connectReq.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pass)))
	}
	if err := connectReq.Write(conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: sending CONNECT %s to proxy %s: %w", ErrUnreachable, res.Address, res.Proxy, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, connectReq)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: reading proxy %s's answer to CONNECT %s: %w", ErrUnreachable, res.Proxy, res.Address, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		conn.Close()
		return nil, fmt.Errorf("%w: proxy %s refused CONNECT %s: %s", ErrUnreachable, res.Proxy, res.Address, resp.Status)
	}
	if br.Buffered() > 0 {
		// The server spoke first and the proxy passed it on already: keep those bytes.
		return &bufferedConn{Conn: conn, r: br}, nil
	}
	return conn, nil
}

// verify checks the presented chain for host against the trusted roots, the way a TLS client
// would.
func (f *Fetcher) verify(host string, certs []*x509.Certificate) error {
	intermediates := x509.NewCertPool()
	for _, c := range certs[1:] {
		intermediates.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         f.RootCAs,
		Intermediates: intermediates,
		DNSName:       host,
	})
	return err
}

// selfSigned reports whether c names itself as issuer and carries its own signature. (Not
// CheckSignatureFrom: that also demands a CA certificate, and self-signed server certificates
// usually are not.)
func selfSigned(c *x509.Certificate) bool {
	return string(c.RawIssuer) == string(c.RawSubject) &&
		c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// via describes the proxy in error messages.
func via(res *Result) string {
	if res.Proxy == "" {
		return ""
	}
	return " via proxy " + res.Proxy
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
