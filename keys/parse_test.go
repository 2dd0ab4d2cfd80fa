package keys_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

type wantKey struct {
	pub crypto.PublicKey
	alg string
}

type parseCase struct {
	name string
	data []byte
	want []wantKey // accepted inputs

	// rejected inputs
	errBlock    int      // ParseError.Block
	errType     string   // ParseError.Type
	errContains []string // substrings of the message, besides the input name
	errIs       error
}

// validParseCases are inputs ParsePEM must accept. withRSA4096 adds the (slow) 4096-bit key.
func validParseCases(withRSA4096 bool) []parseCase {
	r := rsa2048A()
	r2 := rsa2048B()
	p256, p384, p521 := ecP256(), ecP384(), ecP521()
	cases := []parseCase{
		{name: "PUBLIC KEY RSA 2048", data: pemPKIX(&r.PublicKey), want: []wantKey{{&r.PublicKey, "RS256"}}},
		{name: "PUBLIC KEY EC P-256", data: pemPKIX(&p256.PublicKey), want: []wantKey{{&p256.PublicKey, "ES256"}}},
		{name: "PUBLIC KEY EC P-384", data: pemPKIX(&p384.PublicKey), want: []wantKey{{&p384.PublicKey, "ES384"}}},
		{name: "PUBLIC KEY EC P-521", data: pemPKIX(&p521.PublicKey), want: []wantKey{{&p521.PublicKey, "ES512"}}},
		{name: "RSA PUBLIC KEY", data: pemRSAPublic(&r.PublicKey), want: []wantKey{{&r.PublicKey, "RS256"}}},
		{name: "RSA PRIVATE KEY", data: pemRSAPrivate(r), want: []wantKey{{&r.PublicKey, "RS256"}}},
		{name: "EC PRIVATE KEY P-256", data: pemECPrivate(p256), want: []wantKey{{&p256.PublicKey, "ES256"}}},
		{name: "EC PRIVATE KEY P-384", data: pemECPrivate(p384), want: []wantKey{{&p384.PublicKey, "ES384"}}},
		{name: "EC PRIVATE KEY P-521", data: pemECPrivate(p521), want: []wantKey{{&p521.PublicKey, "ES512"}}},
		{
			name: "EC PARAMETERS + EC PRIVATE KEY (openssl ecparam -genkey)",
			data: concat(pemECParameters(p256.Curve), pemECPrivate(p256)),
			want: []wantKey{{&p256.PublicKey, "ES256"}},
		},
		{
			name: "EC PARAMETERS + EC PRIVATE KEY P-384",
			data: concat(pemECParameters(p384.Curve), pemECPrivate(p384)),
			want: []wantKey{{&p384.PublicKey, "ES384"}},
		},
		{name: "PRIVATE KEY PKCS#8 RSA", data: pemPKCS8(r), want: []wantKey{{&r.PublicKey, "RS256"}}},
		{name: "PRIVATE KEY PKCS#8 EC P-256", data: pemPKCS8(p256), want: []wantKey{{&p256.PublicKey, "ES256"}}},
		{name: "PRIVATE KEY PKCS#8 EC P-521", data: pemPKCS8(p521), want: []wantKey{{&p521.PublicKey, "ES512"}}},
		{name: "CERTIFICATE RSA", data: pemCertificate(r), want: []wantKey{{&r.PublicKey, "RS256"}}},
		{name: "CERTIFICATE EC P-384", data: pemCertificate(p384), want: []wantKey{{&p384.PublicKey, "ES384"}}},
		{
			name: "several blocks keep their order",
			data: concat(pemPKIX(&p384.PublicKey), pemRSAPublic(&r2.PublicKey), pemCertificate(p256), pemPKIX(&r.PublicKey)),
			want: []wantKey{{&p384.PublicKey, "ES384"}, {&r2.PublicKey, "RS256"}, {&p256.PublicKey, "ES256"}, {&r.PublicKey, "RS256"}},
		},
		{
			name: "private and public half of the same key (tls.key + tls.crt concatenated)",
			data: concat(pemRSAPrivate(r), pemPKIX(&r.PublicKey)),
			want: []wantKey{{&r.PublicKey, "RS256"}, {&r.PublicKey, "RS256"}},
		},
		{
			name: "text around blocks is ignored (openssl x509 -text style)",
			data: concat([]byte("subject=CN = service-accounts\n"), pemCertificate(p256), []byte("\n# old key\n"), pemPKIX(&r2.PublicKey), []byte("trailing words\n")),
			want: []wantKey{{&p256.PublicKey, "ES256"}, {&r2.PublicKey, "RS256"}},
		},
		{
			name: "CRLF line endings",
			data: bytes.ReplaceAll(pemPKIX(&p256.PublicKey), []byte("\n"), []byte("\r\n")),
			want: []wantKey{{&p256.PublicKey, "ES256"}},
		},
	}
	if withRSA4096 {
		r4 := rsa4096()
		cases = append(cases,
			parseCase{name: "PUBLIC KEY RSA 4096", data: pemPKIX(&r4.PublicKey), want: []wantKey{{&r4.PublicKey, "RS256"}}},
			parseCase{name: "RSA PRIVATE KEY 4096", data: pemRSAPrivate(r4), want: []wantKey{{&r4.PublicKey, "RS256"}}},
		)
	}
	return cases
}

// invalidParseCases are inputs ParsePEM must reject as a whole.
func invalidParseCases() []parseCase {
	r := rsa2048A()
	p256 := ecP256()
	weak := rsa1024()
	p224 := ecP224()
	ed := edKey()
	goodDER := pemPKIX(&p256.PublicKey)
	corrupt := func(typ string, der []byte) []byte {
		der = bytes.Clone(der)
		der[len(der)/2] ^= 0xff
		return pemBlock(typ, der[:len(der)-7])
	}
	truncated := goodDER[:len(goodDER)-40] // the END line and part of the base64 are missing
	return []parseCase{
		{name: "RSA 1024 PUBLIC KEY", data: pemPKIX(&weak.PublicKey), errBlock: 1, errType: "PUBLIC KEY", errContains: []string{"1024 bits", "2048"}},
		{name: "RSA 1024 RSA PRIVATE KEY", data: pemRSAPrivate(weak), errBlock: 1, errType: "RSA PRIVATE KEY", errContains: []string{"1024 bits"}},
		{name: "RSA 1024 CERTIFICATE", data: pemCertificate(weak), errBlock: 1, errType: "CERTIFICATE", errContains: []string{"1024 bits"}},
		{name: "P-224 PUBLIC KEY", data: pemPKIX(&p224.PublicKey), errBlock: 1, errType: "PUBLIC KEY", errContains: []string{"P-224", "not supported"}},
		{name: "P-224 EC PRIVATE KEY", data: concat(pemECParameters(p224.Curve), pemECPrivate(p224)), errBlock: 2, errType: "EC PRIVATE KEY", errContains: []string{"P-224"}},
		{name: "P-224 PKCS#8", data: pemPKCS8(p224), errBlock: 1, errType: "PRIVATE KEY", errContains: []string{"P-224"}},
		{name: "Ed25519 PUBLIC KEY", data: pemPKIX(ed.Public()), errBlock: 1, errType: "PUBLIC KEY", errContains: []string{"ed25519", "only RSA and ECDSA"}},
		{name: "Ed25519 PKCS#8", data: pemPKCS8(ed), errBlock: 1, errType: "PRIVATE KEY", errContains: []string{"ed25519", "only RSA and ECDSA"}},
		{
			name:     "ENCRYPTED PRIVATE KEY",
			data:     pemBlock("ENCRYPTED PRIVATE KEY", []byte{0x30, 0x03, 0x02, 0x01, 0x00}),
			errBlock: 1, errType: "ENCRYPTED PRIVATE KEY", errContains: []string{"encrypted"},
		},
		{
			name: "Proc-Type headers (legacy encrypted PEM)",
			data: pem.EncodeToMemory(&pem.Block{
				Type:    "RSA PRIVATE KEY",
				Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00112233445566778899AABBCCDDEEFF"},
				Bytes:   []byte("not really ciphertext, it is never looked at"),
			}),
			errBlock: 1, errType: "RSA PRIVATE KEY", errContains: []string{"headers"},
		},
		{name: "unknown block type", data: pemBlock("OPENSSH PRIVATE KEY", []byte("openssh-key-v1")), errBlock: 1, errType: "OPENSSH PRIVATE KEY", errContains: []string{"(OPENSSH PRIVATE KEY): unsupported PEM block type"}},
		{name: "X509 CRL", data: pemBlock("X509 CRL", []byte{0x30, 0x00}), errBlock: 1, errType: "unsupported type", errContains: []string{"(unsupported type): unsupported PEM block type"}},
		{name: "corrupted DER PUBLIC KEY", data: corrupt("PUBLIC KEY", must(x509.MarshalPKIXPublicKey(&r.PublicKey))), errBlock: 1, errType: "PUBLIC KEY", errContains: []string{"parsing PKIX public key"}},
		{name: "corrupted DER RSA PUBLIC KEY", data: corrupt("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&r.PublicKey)), errBlock: 1, errType: "RSA PUBLIC KEY", errContains: []string{"parsing PKCS#1 public key"}},
		{name: "corrupted DER RSA PRIVATE KEY", data: corrupt("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(r)), errBlock: 1, errType: "RSA PRIVATE KEY", errContains: []string{"parsing PKCS#1 private key"}},
		{name: "corrupted DER EC PRIVATE KEY", data: corrupt("EC PRIVATE KEY", must(x509.MarshalECPrivateKey(p256))), errBlock: 1, errType: "EC PRIVATE KEY", errContains: []string{"parsing EC private key"}},
		{name: "corrupted DER PRIVATE KEY", data: corrupt("PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(p256))), errBlock: 1, errType: "PRIVATE KEY", errContains: []string{"parsing PKCS#8 private key"}},
		{name: "corrupted DER CERTIFICATE", data: corrupt("CERTIFICATE", certDER(p256)), errBlock: 1, errType: "CERTIFICATE", errContains: []string{"parsing certificate"}},
		{name: "empty DER PUBLIC KEY", data: pemBlock("PUBLIC KEY", nil), errBlock: 1, errType: "PUBLIC KEY", errContains: []string{"parsing PKIX public key"}},
		{
			name: "bad second block fails the whole input",
			data: concat(pemPKIX(&r.PublicKey), pemPKIX(&weak.PublicKey)), errBlock: 2, errType: "PUBLIC KEY", errContains: []string{"1024 bits"},
		},
		{
			name: "EC PARAMETERS count as blocks",
			data: concat(pemPKIX(&r.PublicKey), pemECParameters(p256.Curve), pemECPrivate(p224)), errBlock: 3, errType: "EC PRIVATE KEY", errContains: []string{"P-224"},
		},
		{
			name: "truncated last block is not silently dropped",
			data: concat(pemPKIX(&r.PublicKey), truncated), errBlock: 2, errType: "PUBLIC KEY", errContains: []string{"malformed PEM"},
		},
		{
			name:     "block with broken base64 between good blocks is not silently skipped",
			data:     concat(pemPKIX(&r.PublicKey), bytes.Replace(pemPKIX(&weak.PublicKey), []byte("MI"), []byte("M!"), 1), goodDER),
			errBlock: 2, errType: "PUBLIC KEY", errContains: []string{"malformed PEM"},
		},
		{
			name: "BEGIN without END before a good block",
			data: concat([]byte("-----BEGIN PUBLIC KEY-----\nMIIB\n"), goodDER), errBlock: 1, errType: "PUBLIC KEY", errContains: []string{"malformed PEM"},
		},
		{name: "only EC PARAMETERS", data: pemECParameters(p256.Curve), errIs: keys.ErrNoPEM},
		{name: "no PEM at all", data: []byte("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ user@host\n"), errIs: keys.ErrNoPEM},
		{name: "DER instead of PEM", data: must(x509.MarshalPKIXPublicKey(&r.PublicKey)), errIs: keys.ErrNoPEM},
		{name: "empty input", data: nil, errContains: []string{"empty"}},
		{name: "whitespace only", data: []byte(" \n\t\r\n"), errContains: []string{"empty"}},
	}
}

func checkParsed(t *testing.T, got []keys.PublicKey, want []wantKey) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d keys, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.IsZero() {
			t.Fatalf("key %d is zero", i)
		}
		if g.Algorithm() != w.alg {
			t.Errorf("key %d: algorithm %q, want %q", i, g.Algorithm(), w.alg)
		}
		if kid := independentKID(t, w.pub); g.KeyID() != kid {
			t.Errorf("key %d: kid %q, want %q", i, g.KeyID(), kid)
		}
		switch p := g.Public().(type) {
		case *rsa.PublicKey:
			if !p.Equal(w.pub) {
				t.Errorf("key %d: RSA public key differs from the original", i)
			}
		case *ecdsa.PublicKey:
			if !p.Equal(w.pub) {
				t.Errorf("key %d: ECDSA public key differs from the original", i)
			}
		default:
			t.Errorf("key %d: Public() is %T, want *rsa.PublicKey or *ecdsa.PublicKey", i, p)
		}
	}
}

func TestParsePEMAccepts(t *testing.T) {
	for _, tc := range validParseCases(true) {
		t.Run(tc.name, func(t *testing.T) {
			got, err := keys.ParsePEM("test-input", tc.data)
			if err != nil {
				t.Fatalf("ParsePEM: %v", err)
			}
			checkParsed(t, got, tc.want)
		})
	}
}

func TestParsePEMRejects(t *testing.T) {
	for _, tc := range invalidParseCases() {
		t.Run(tc.name, func(t *testing.T) {
			const input = "secret kube-system/cluster-sa key tls.crt"
			got, err := keys.ParsePEM(input, tc.data)
			if err == nil {
				t.Fatalf("ParsePEM accepted the input: %v", got)
			}
			if got != nil {
				t.Errorf("ParsePEM returned keys %v along with an error", got)
			}
			var pe *keys.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T (%v) is not a *keys.ParseError", err, err)
			}
			if pe.Input != input {
				t.Errorf("ParseError.Input = %q, want %q", pe.Input, input)
			}
			if pe.Block != tc.errBlock {
				t.Errorf("ParseError.Block = %d, want %d (%v)", pe.Block, tc.errBlock, err)
			}
			if pe.Type != tc.errType {
				t.Errorf("ParseError.Type = %q, want %q", pe.Type, tc.errType)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, input+": ") {
				t.Errorf("message %q does not start with the input name", msg)
			}
			if tc.errBlock > 0 {
				if want := fmt.Sprintf("PEM block %d (%s): ", tc.errBlock, tc.errType); !strings.Contains(msg, want) {
					t.Errorf("message %q does not contain %q", msg, want)
				}
			}
			for _, s := range tc.errContains {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q does not contain %q", msg, s)
				}
			}
			if tc.errIs != nil && !errors.Is(err, tc.errIs) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.errIs)
			}
			if pe.Unwrap() == nil {
				t.Error("ParseError wraps no cause")
			}
		})
	}
}

// TestParsePEMDropsPrivateKey checks that what comes out of a private key PEM holds only the public
// half.
func TestParsePEMDropsPrivateKey(t *testing.T) {
	for _, data := range [][]byte{pemRSAPrivate(rsa2048A()), pemPKCS8(rsa2048A()), pemECPrivate(ecP384()), pemPKCS8(ecP521())} {
		ks, err := keys.ParsePEM("priv", data)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks {
			switch p := k.Public().(type) {
			case *rsa.PublicKey, *ecdsa.PublicKey:
			default:
				t.Errorf("Public() is %T", p)
			}
			if _, ok := k.Public().(crypto.Signer); ok {
				t.Errorf("Public() of %s can sign", k)
			}
			if !bytes.Contains(k.PEM(), []byte("-----BEGIN PUBLIC KEY-----")) || bytes.Contains(k.PEM(), []byte("PRIVATE")) {
				t.Errorf("PEM() = %s", k.PEM())
			}
		}
	}
}

// TestPublicKeyPEMRoundTrip: PEM() writes a PUBLIC KEY that parses back to the same key.
func TestPublicKeyPEMRoundTrip(t *testing.T) {
	for _, pub := range []crypto.PublicKey{&rsa2048A().PublicKey, &ecP256().PublicKey, &ecP384().PublicKey, &ecP521().PublicKey} {
		k := mustPublicKey(t, pub)
		back, err := keys.ParsePEM("roundtrip", k.PEM())
		if err != nil {
			t.Fatal(err)
		}
		if len(back) != 1 || !back[0].Equal(k) || back[0].KeyID() != k.KeyID() || back[0].Algorithm() != k.Algorithm() {
			t.Errorf("round trip of %s gave %v", k, back)
		}
	}
}
