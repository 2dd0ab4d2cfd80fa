package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// parseChain decodes every CERTIFICATE block in pemBytes.
func parseChain(t *testing.T, pemBytes []byte) []*x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for rest := pemBytes; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			t.Fatalf("unexpected PEM block %q in certificate chain", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	return certs
}

func TestChainsVerify(t *testing.T) {
	root, err := NewCA("test root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("test intermediate")
	if err != nil {
		t.Fatal(err)
	}
	inter2, err := inter.NewIntermediate("test intermediate 2")
	if err != nil {
		t.Fatal(err)
	}
	otherRoot, err := NewCA("other root")
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		issuer   *CA
		roots    *CA
		client   bool
		host     string // DNSName to verify; "" for none
		wantLen  int    // certificates in Leaf.CertPEM
		wantFail bool
	}{
		{name: "server leaf from root", issuer: root, roots: root, host: "localhost", wantLen: 1},
		{name: "server leaf from intermediate", issuer: inter, roots: root, host: "localhost", wantLen: 2},
		{name: "server leaf from second-level intermediate", issuer: inter2, roots: root, host: "127.0.0.1", wantLen: 3},
		{name: "IP SAN", issuer: inter, roots: root, host: "127.0.0.1", wantLen: 2},
		{name: "wrong host", issuer: root, roots: root, host: "example.com", wantLen: 1, wantFail: true},
		{name: "untrusted root", issuer: inter, roots: otherRoot, host: "localhost", wantLen: 2, wantFail: true},
		{name: "client leaf from intermediate", issuer: inter, roots: root, client: true, wantLen: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var leaf *Leaf
			var err error
			usage := x509.ExtKeyUsageServerAuth
			if tc.client {
				usage = x509.ExtKeyUsageClientAuth
				leaf, err = tc.issuer.IssueClient("admin", "system:masters", "devs")
			} else {
				leaf, err = tc.issuer.IssueServer("localhost", "127.0.0.1", "::1")
			}
			if err != nil {
				t.Fatal(err)
			}
			certs := parseChain(t, leaf.CertPEM)
			if len(certs) != tc.wantLen {
				t.Fatalf("CertPEM holds %d certificates, want %d", len(certs), tc.wantLen)
			}
			if !certs[0].Equal(leaf.Certificate) {
				t.Fatal("first certificate in CertPEM is not Leaf.Certificate")
			}
			for _, c := range certs {
				if c.Equal(root.Certificate()) {
					t.Fatal("CertPEM includes the root")
				}
			}
			inters := x509.NewCertPool()
			for _, c := range certs[1:] {
				inters.AddCert(c)
			}
			chains, err := certs[0].Verify(x509.VerifyOptions{
				Roots:         tc.roots.Pool(),
				Intermediates: inters,
				DNSName:       tc.host,
				KeyUsages:     []x509.ExtKeyUsage{usage},
			})
			if tc.wantFail {
				if err == nil {
					t.Fatal("verification succeeded, want failure")
				}
				return
			}
			if err != nil {
				t.Fatalf("chain does not verify: %v", err)
			}
			if got := chains[0][len(chains[0])-1]; !got.Equal(root.Certificate()) {
				t.Fatalf("chain ends at %q, want the root", got.Subject.CommonName)
			}
			if tc.client {
				// DER sorts the values of a SET, so the order is not kept.
				got := leaf.Certificate.Subject.Organization
				if len(got) != 2 || !slices.Contains(got, "system:masters") || !slices.Contains(got, "devs") {
					t.Fatalf("organizations = %v, want system:masters and devs", got)
				}
			}
		})
	}
}

func TestServerCertificateOverRealTLS(t *testing.T) {
	root, err := NewCA("test root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("test intermediate")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := inter.IssueServer("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := leaf.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = c.Write([]byte("hello"))
			}(c)
		}
	}()

	other, err := NewCA("other root")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		roots   *x509.CertPool
		wantErr bool
	}{
		{name: "client trusting only the root", roots: root.Pool()},
		{name: "client trusting another CA", roots: other.Pool(), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &tls.Dialer{Config: &tls.Config{RootCAs: tc.roots}}
			conn, err := d.Dial("tcp", l.Addr().String())
			if tc.wantErr {
				var uae x509.UnknownAuthorityError
				if !errors.As(err, &uae) {
					t.Fatalf("dial error = %v, want an unknown-authority error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			b, err := io.ReadAll(conn)
			if err != nil || string(b) != "hello" {
				t.Fatalf("read %q, %v", b, err)
			}
		})
	}
}

func TestWriteFiles(t *testing.T) {
	ca, err := NewCA("test root")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueServer("localhost")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile, err := leaf.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Fatalf("written files do not load: %v", err)
	}
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("key file mode %v, want 0600", perm)
	}
	if filepath.Dir(certFile) != dir || filepath.Dir(keyFile) != dir {
		t.Fatalf("files written outside %s: %s %s", dir, certFile, keyFile)
	}
}

func TestIssueServerRequiresHosts(t *testing.T) {
	ca, err := NewCA("test root")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.IssueServer(); err == nil {
		t.Fatal("IssueServer() with no hosts succeeded")
	}
}

func TestSigningKeys(t *testing.T) {
	for _, tc := range []struct {
		name     string
		gen      func() ([]byte, []byte, error)
		privType string
		check    func(priv, pub any) bool
	}{
		{
			name:     "RSA-2048",
			gen:      func() ([]byte, []byte, error) { return GenerateRSAKeyPEM(2048) },
			privType: "RSA PRIVATE KEY",
			check: func(priv, pub any) bool {
				k, ok := priv.(*rsa.PrivateKey)
				return ok && k.N.BitLen() == 2048 && k.PublicKey.Equal(pub)
			},
		},
		{
			name:     "ECDSA P-256",
			gen:      func() ([]byte, []byte, error) { return GenerateECDSAKeyPEM(elliptic.P256()) },
			privType: "EC PRIVATE KEY",
			check: func(priv, pub any) bool {
				k, ok := priv.(*ecdsa.PrivateKey)
				return ok && k.Curve == elliptic.P256() && k.PublicKey.Equal(pub)
			},
		},
		{
			name:     "ECDSA P-384",
			gen:      func() ([]byte, []byte, error) { return GenerateECDSAKeyPEM(elliptic.P384()) },
			privType: "EC PRIVATE KEY",
			check: func(priv, pub any) bool {
				k, ok := priv.(*ecdsa.PrivateKey)
				return ok && k.Curve == elliptic.P384() && k.PublicKey.Equal(pub)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			privPEM, pubPEM, err := tc.gen()
			if err != nil {
				t.Fatal(err)
			}
			pb, rest := pem.Decode(privPEM)
			if pb == nil || pb.Type != tc.privType || len(rest) != 0 {
				t.Fatalf("private key PEM: want one %q block, got %q", tc.privType, privPEM)
			}
			var priv any
			switch pb.Type {
			case "RSA PRIVATE KEY":
				priv, err = x509.ParsePKCS1PrivateKey(pb.Bytes)
			case "EC PRIVATE KEY":
				priv, err = x509.ParseECPrivateKey(pb.Bytes)
			}
			if err != nil {
				t.Fatalf("parsing private key: %v", err)
			}
			ub, rest := pem.Decode(pubPEM)
			if ub == nil || ub.Type != "PUBLIC KEY" || len(rest) != 0 {
				t.Fatalf("public key PEM: want one PUBLIC KEY block, got %q", pubPEM)
			}
			pub, err := x509.ParsePKIXPublicKey(ub.Bytes)
			if err != nil {
				t.Fatalf("parsing public key: %v", err)
			}
			if !tc.check(priv, pub) {
				t.Fatalf("key pair mismatch or wrong parameters: %T / %T", priv, pub)
			}
		})
	}
	if _, _, err := GenerateECDSAKeyPEM(nil); err == nil {
		t.Fatal("GenerateECDSAKeyPEM(nil) succeeded")
	}
}
