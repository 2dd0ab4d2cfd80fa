// Package pki creates throw-away certificate authorities, TLS certificates and service-account
// signing keys for tests and local development stacks. Nothing here is meant for production: keys
// live in memory and in files written with owner-only permissions, and certificates are valid for
// one year.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

const (
	validity = 365 * 24 * time.Hour
	// backdate keeps freshly issued certificates valid for peers whose clock is slightly behind.
	backdate = 5 * time.Minute
)

// CA is a certificate authority: a root made by NewCA or an intermediate made by
// (*CA).NewIntermediate. Its key is an ECDSA P-256 key held in memory.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// chain is this CA followed by its issuers, excluding the root. Empty for a root.
	chain []*x509.Certificate
}

// Leaf is an end-entity certificate and its private key.
type Leaf struct {
	// Certificate is the parsed leaf certificate.
	Certificate *x509.Certificate
	// PrivateKey is the leaf's ECDSA P-256 key.
	PrivateKey *ecdsa.PrivateKey
	// CertPEM is the leaf followed by the issuing chain up to, but excluding, the root: what a
	// TLS server presents.
	CertPEM []byte
	// KeyPEM is the private key as an "EC PRIVATE KEY" (SEC 1) PEM block.
	KeyPEM []byte
}

// NewCA creates a self-signed root CA with the given common name.
func NewCA(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key for CA %q: %w", commonName, err)
	}
	now := time.Now()
	tmpl, err := caTemplate(commonName, now.Add(-backdate), now.Add(validity))
	if err != nil {
		return nil, err
	}
	cert, err := sign(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-signing CA %q: %w", commonName, err)
	}
	return &CA{cert: cert, key: key}, nil
}

// NewIntermediate creates a CA certificate signed by ca.
func (ca *CA) NewIntermediate(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key for intermediate CA %q: %w", commonName, err)
	}
	notBefore, notAfter := ca.leafValidity()
	tmpl, err := caTemplate(commonName, notBefore, notAfter)
	if err != nil {
		return nil, err
	}
	cert, err := sign(tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("signing intermediate CA %q: %w", commonName, err)
	}
	chain := append([]*x509.Certificate{cert}, ca.chain...)
	return &CA{cert: cert, key: key, chain: chain}, nil
}

// Certificate returns the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the CA's certificate as a PEM block.
func (ca *CA) CertPEM() []byte { return encodeCert(ca.cert) }

// Pool returns a certificate pool holding only this CA's certificate, for use as RootCAs or
// ClientCAs.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return pool
}

// IssueServer issues a TLS server certificate for the given hosts. Each host that parses as an IP
// address becomes an IP SAN, any other a DNS SAN; the first host is also the common name.
func (ca *CA) IssueServer(hosts ...string) (*Leaf, error) {
	if len(hosts) == 0 {
		return nil, errors.New("issuing server certificate: at least one host is required")
	}
	tmpl, err := ca.leafTemplate(hosts[0])
	if err != nil {
		return nil, err
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	for _, h := range hosts {
		if h == "" {
			return nil, errors.New("issuing server certificate: empty host")
		}
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	leaf, err := ca.issue(tmpl)
	if err != nil {
		return nil, fmt.Errorf("issuing server certificate for %v: %w", hosts, err)
	}
	return leaf, nil
}

// IssueClient issues a TLS client certificate. Kubernetes reads the common name as the user name
// and the organizations as groups.
func (ca *CA) IssueClient(commonName string, orgs ...string) (*Leaf, error) {
	tmpl, err := ca.leafTemplate(commonName)
	if err != nil {
		return nil, err
	}
	tmpl.Subject.Organization = orgs
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	leaf, err := ca.issue(tmpl)
	if err != nil {
		return nil, fmt.Errorf("issuing client certificate for %q: %w", commonName, err)
	}
	return leaf, nil
}

// TLSCertificate returns the leaf and its chain as a tls.Certificate.
func (l *Leaf) TLSCertificate() (tls.Certificate, error) {
	c, err := tls.X509KeyPair(l.CertPEM, l.KeyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("loading key pair for %q: %w", l.Certificate.Subject.CommonName, err)
	}
	return c, nil
}

// WriteFiles writes CertPEM to dir/tls.crt and KeyPEM to dir/tls.key (mode 0600), replacing
// existing files, and returns their paths. dir must exist.
func (l *Leaf) WriteFiles(dir string) (certFile, keyFile string, err error) {
	certFile = filepath.Join(dir, "tls.crt")
	keyFile = filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, l.CertPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("writing certificate: %w", err)
	}
	if err := os.WriteFile(keyFile, l.KeyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("writing private key: %w", err)
	}
	return certFile, keyFile, nil
}

// GenerateRSAKeyPEM generates an RSA key pair and returns the private key as a PKCS #1
// "RSA PRIVATE KEY" block and the public key as a PKIX "PUBLIC KEY" block: the formats
// kube-apiserver's --service-account-signing-key-file and --service-account-key-file accept.
func GenerateRSAKeyPEM(bits int) (privPEM, pubPEM []byte, err error) {
	key, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, nil, fmt.Errorf("generating RSA-%d key: %w", bits, err)
	}
	privPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	pubPEM, err = encodePublicKey(key.Public())
	if err != nil {
		return nil, nil, err
	}
	return privPEM, pubPEM, nil
}

// GenerateECDSAKeyPEM generates an ECDSA key pair on curve and returns the private key as an
// "EC PRIVATE KEY" (SEC 1) block and the public key as a PKIX "PUBLIC KEY" block.
func GenerateECDSAKeyPEM(curve elliptic.Curve) (privPEM, pubPEM []byte, err error) {
	if curve == nil {
		return nil, nil, errors.New("generating ECDSA key: nil curve")
	}
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating ECDSA %s key: %w", curve.Params().Name, err)
	}
	privPEM, err = encodeECKey(key)
	if err != nil {
		return nil, nil, err
	}
	pubPEM, err = encodePublicKey(key.Public())
	if err != nil {
		return nil, nil, err
	}
	return privPEM, pubPEM, nil
}

func caTemplate(commonName string, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil
}

func (ca *CA) leafTemplate(commonName string) (*x509.Certificate, error) {
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	notBefore, notAfter := ca.leafValidity()
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}, nil
}

// leafValidity returns one year from now, cut to the issuer's own expiry.
func (ca *CA) leafValidity() (notBefore, notAfter time.Time) {
	now := time.Now()
	notBefore, notAfter = now.Add(-backdate), now.Add(validity)
	if notBefore.Before(ca.cert.NotBefore) {
		notBefore = ca.cert.NotBefore
	}
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	return notBefore, notAfter
}

func (ca *CA) issue(tmpl *x509.Certificate) (*Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	cert, err := sign(tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, err
	}
	var chain bytes.Buffer
	chain.Write(encodeCert(cert))
	for _, c := range ca.chain {
		chain.Write(encodeCert(c))
	}
	keyPEM, err := encodeECKey(key)
	if err != nil {
		return nil, err
	}
	return &Leaf{Certificate: cert, PrivateKey: key, CertPEM: chain.Bytes(), KeyPEM: keyPEM}, nil
}

func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("creating certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing created certificate: %w", err)
	}
	return cert, nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return n, nil
}

func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func encodeECKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshalling EC private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func encodePublicKey(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshalling public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
