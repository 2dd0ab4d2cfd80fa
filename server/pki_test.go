package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testCA is a throwaway certificate authority for real TLS in tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1000),
		Subject:               pkix.Name{CommonName: "server test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// pemPair is a certificate and its key, both PEM.
type pemPair struct{ cert, key []byte }

// issue returns a certificate for 127.0.0.1 with the given serial, and its key.
func (ca *testCA) issue(t *testing.T, serial int64) pemPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemPair{
		cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

// certDir lays out a certificate and key the way one deployment style does and replaces them
// the way that style does.
type certDir interface {
	paths() (certFile, keyFile string)
	write(t *testing.T, p pemPair)
}

// renameDir replaces each file by writing a temporary file and renaming it over the old one.
type renameDir struct{ dir string }

func (d renameDir) paths() (string, string) {
	return filepath.Join(d.dir, "tls.crt"), filepath.Join(d.dir, "tls.key")
}

func (d renameDir) write(t *testing.T, p pemPair) {
	t.Helper()
	certFile, keyFile := d.paths()
	for path, data := range map[string][]byte{certFile: p.cert, keyFile: p.key} {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
}

// secretVolumeDir mimics kubelet's atomic writer for Secret volumes: the files are symlinks
// through ..data, which is itself a symlink to a timestamped directory, swapped by a rename.
type secretVolumeDir struct {
	dir string
	n   *int
}

func (d secretVolumeDir) paths() (string, string) {
	return filepath.Join(d.dir, "tls.crt"), filepath.Join(d.dir, "tls.key")
}

func (d secretVolumeDir) write(t *testing.T, p pemPair) {
	t.Helper()
	*d.n++
	version := filepath.Join(d.dir, "..2026_11_23_10_00_0"+string(rune('0'+*d.n)))
	if err := os.Mkdir(version, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(version, "tls.crt"), p.cert, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(version, "tls.key"), p.key, 0o600); err != nil {
		t.Fatal(err)
	}
	tmpLink := filepath.Join(d.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(version), tmpLink); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(d.dir, "..data"))
	if err := os.Rename(tmpLink, filepath.Join(d.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(d.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"tls.crt", "tls.key"} {
		link := filepath.Join(d.dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			t.Fatal(err)
		}
	}
}
