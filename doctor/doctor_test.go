package doctor_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/doctor"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
)

// testKey is an RSA key with kube-apiserver's kid (SHA-256 of the DER public key, base64url).
type testKey struct {
	priv *rsa.PrivateKey
	kid  string
}

func newTestKey(t *testing.T) testKey {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return testKey{priv: priv, kid: base64.RawURLEncoding.EncodeToString(sum[:])}
}

func (k testKey) jwk() jose.JSONWebKey {
	return jose.JSONWebKey{Key: &k.priv.PublicKey, KeyID: k.kid, Algorithm: "RS256", Use: "sig"}
}

// claims of a token; zero fields are filled in by sign.
type claims struct {
	Iss string `json:"iss"`
	Sub string `json:"sub"`
	Aud any    `json:"aud"`
	Exp int64  `json:"exp"`
	Iat int64  `json:"iat"`
	Nbf int64  `json:"nbf,omitempty"`
}

// sign mints a token signed by k with header kid (omitted when kid is nil).
func sign(t *testing.T, k testKey, kid *string, c claims) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	if kid != nil {
		opts = opts.WithHeader("kid", *kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k.priv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// issuer is a real HTTPS server with a test CA serving crafted documents.
type issuer struct {
	url   string
	roots *x509.CertPool

	mu           sync.Mutex
	discovery    map[string]any
	jwks         []byte
	jwksType     string
	jwksCache    string
	jwksDelay    time.Duration
	jwksStatus   int
	discoveryOff bool
}

func newIssuer(t *testing.T, keys ...jose.JSONWebKey) *issuer {
	t.Helper()
	ca, err := pki.NewCA("doctor test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueServer("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := leaf.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	is := &issuer{roots: ca.Pool(), jwksType: "application/jwk-set+json", jwksCache: "public, max-age=3600", jwksStatus: http.StatusOK}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(is.serve))
	srv.TLS = srv.Config.TLSConfig
	if srv.TLS == nil {
		srv.TLS = newTLSConfig()
	}
	srv.TLS.Certificates = append(srv.TLS.Certificates, cert)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	is.url = "https://" + srv.Listener.Addr().String()
	is.discovery = map[string]any{
		"issuer":                                is.url,
		"jwks_uri":                              is.url + "/openid/v1/jwks",
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	}
	is.setKeys(t, keys...)
	return is
}

func (is *issuer) setKeys(t *testing.T, keys ...jose.JSONWebKey) {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.jwks = b
}

func (is *issuer) set(f func(is *issuer)) {
	is.mu.Lock()
	defer is.mu.Unlock()
	f(is)
}

func (is *issuer) serve(w http.ResponseWriter, r *http.Request) {
	is.mu.Lock()
	disco, _ := json.Marshal(is.discovery)
	jwks, typ, cache, delay, status, off := is.jwks, is.jwksType, is.jwksCache, is.jwksDelay, is.jwksStatus, is.discoveryOff
	is.mu.Unlock()
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		if off {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		_, _ = w.Write(disco)
	case "/openid/v1/jwks":
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", typ)
		if cache != "" {
			w.Header().Set("Cache-Control", cache)
		}
		w.WriteHeader(status)
		_, _ = w.Write(jwks)
	default:
		http.NotFound(w, r)
	}
}

// closedURL is an https URL nobody listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return "https://" + addr + "/openid/v1/jwks"
}

// TestDoctorFailureModes reproduces each problem against a real HTTPS server and checks that
// exactly the expected check fails, naming the AWS error, while the others pass or skip.
func TestDoctorFailureModes(t *testing.T) {
	signing, other := newTestKey(t), newTestKey(t)
	now := time.Now()
	good := func(is *issuer) claims {
		return claims{Iss: is.url, Sub: "system:serviceaccount:default:app", Aud: []string{"sts.amazonaws.com"}, Exp: now.Add(time.Hour).Unix(), Iat: now.Unix()}
	}
	tests := []struct {
		name string
		// setup changes the issuer and returns the token (or "" for none) and the URL to diagnose.
		setup    func(t *testing.T, is *issuer) (token, issuerURL string)
		timeout  time.Duration
		failing  []string // the checks that must fail; all others pass or skip
		awsError string   // the AWS error of the first failing check
	}{
		{
			name: "all green",
			setup: func(t *testing.T, is *issuer) (string, string) {
				return sign(t, signing, &signing.kid, good(is)), is.url
			},
		},
		{
			name: "no token: token checks skipped",
			setup: func(t *testing.T, is *issuer) (string, string) {
				return "", is.url
			},
		},
		{
			name: "discovery issuer with a trailing slash",
			setup: func(t *testing.T, is *issuer) (string, string) {
				is.set(func(is *issuer) { is.discovery["issuer"] = is.url + "/" })
				return sign(t, signing, &signing.kid, good(is)), is.url
			},
			failing:  []string{"discovery-issuer"},
			awsError: doctor.ErrIssuerMismatch,
		},
		{
			name: "issuer URL given with a trailing slash",
			setup: func(t *testing.T, is *issuer) (string, string) {
				return "", is.url + "/"
			},
			failing:  []string{"issuer-url"},
			awsError: doctor.ErrRetrieveKey,
		},
		{
			name: "token iss differs",
			setup: func(t *testing.T, is *issuer) (string, string) {
				c := good(is)
				c.Iss = is.url + "/"
				return sign(t, signing, &signing.kid, c), is.url
			},
			failing:  []string{"token-issuer"},
			awsError: doctor.ErrNoProvider,
		},
		{
			name: "token signed by a key not in the JWKS",
			setup: func(t *testing.T, is *issuer) (string, string) {
				return sign(t, other, &other.kid, good(is)), is.url
			},
			failing:  []string{"token-kid"},
			awsError: doctor.ErrRetrieveKey,
		},
		{
			name: "token without kid, no empty-kid key",
			setup: func(t *testing.T, is *issuer) (string, string) {
				return sign(t, signing, nil, good(is)), is.url
			},
			failing:  []string{"token-kid"},
			awsError: doctor.ErrRetrieveKey,
		},
		{
			name: "token without kid, empty-kid key published (legacy)",
			setup: func(t *testing.T, is *issuer) (string, string) {
				legacy := signing.jwk()
				legacy.KeyID = ""
				is.setKeys(t, signing.jwk(), legacy)
				return sign(t, signing, nil, good(is)), is.url
			},
		},
		{
			name: "kid published but another key signed",
			setup: func(t *testing.T, is *issuer) (string, string) {
				return sign(t, other, &signing.kid, good(is)), is.url
			},
			failing:  []string{"token-signature"},
			awsError: doctor.ErrSignature,
		},
		{
			name: "wrong audience",
			setup: func(t *testing.T, is *issuer) (string, string) {
				c := good(is)
				c.Aud = "vault"
				return sign(t, signing, &signing.kid, c), is.url
			},
			failing:  []string{"token-audience"},
			awsError: doctor.ErrAudience,
		},
		{
			name: "expired token",
			setup: func(t *testing.T, is *issuer) (string, string) {
				c := good(is)
				c.Iat, c.Exp = now.Add(-2*time.Hour).Unix(), now.Add(-time.Minute).Unix()
				return sign(t, signing, &signing.kid, c), is.url
			},
			failing:  []string{"token-expiry"},
			awsError: doctor.ErrExpired,
		},
		{
			name: "token issued in the future (clock skew)",
			setup: func(t *testing.T, is *issuer) (string, string) {
				c := good(is)
				c.Iat, c.Exp = now.Add(10*time.Minute).Unix(), now.Add(2*time.Hour).Unix()
				return sign(t, signing, &signing.kid, c), is.url
			},
			failing:  []string{"token-expiry"},
			awsError: doctor.ErrNotYetValid,
		},
		{
			name: "nbf in the future (clock skew)",
			setup: func(t *testing.T, is *issuer) (string, string) {
				c := good(is)
				c.Nbf = now.Add(time.Hour).Unix()
				return sign(t, signing, &signing.kid, c), is.url
			},
			failing:  []string{"token-expiry"},
			awsError: doctor.ErrNotYetValid,
		},
		{
			name: "iat within the skew allowance",
			setup: func(t *testing.T, is *issuer) (string, string) {
				c := good(is)
				c.Iat = now.Add(4 * time.Minute).Unix()
				return sign(t, signing, &signing.kid, c), is.url
			},
		},
		{
			name: "malformed token",
			setup: func(t *testing.T, is *issuer) (string, string) {
				return "not-a-jwt", is.url
			},
			failing:  []string{"token-issuer", "token-kid", "token-audience", "token-expiry", "token-signature"},
			awsError: doctor.ErrMalformed,
		},
		{
			name: "JWKS Cache-Control no-store",
			setup: func(t *testing.T, is *issuer) (string, string) {
				is.set(func(is *issuer) { is.jwksCache = "no-store" })
				return sign(t, signing, &signing.kid, good(is)), is.url
			},
			failing:  []string{"jwks-cacheable"},
			awsError: doctor.ErrRetrieveKey,
		},
		{
			name: "JWKS Cache-Control no-cache among others",
			setup: func(t *testing.T, is *issuer) (string, string) {
				is.set(func(is *issuer) { is.jwksCache = "private, No-Cache" })
				return "", is.url
			},
			failing:  []string{"jwks-cacheable"},
			awsError: doctor.ErrRetrieveKey,
		},
		{
			name: "JWKS served as text/html",
			setup: func(t *testing.T, is *issuer) (string, string) {
				is.set(func(is *issuer) { is.jwksType = "text/html; charset=utf-8" })
				return "", is.url
			},
			failing:  []string{"jwks-content-type"},
			awsError: doctor.ErrRetrieveKey,
		},
		{
			name: "jwks_uri unreachable",
			setup: func(t *testing.T, is *issuer) (string, string) {
				u := closedURL(t)
				is.set(func(is *issuer) { is.discovery["jwks_uri"] = u })
				return sign(t, signing, &signing.kid, good(is)), is.url
			},
			failing:  []string{"jwks-reachable"},
			awsError: doctor.ErrRetrieveKey,
		},
		{
			name: "jwks_uri plain http",
			setup: func(t *testing.T, is *issuer) (string, string) {
				is.set(func(is *issuer) {
					is.discovery["jwks_uri"] = strings.Replace(is.url, "https:", "http:", 1) + "/openid/v1/jwks"
				})
				return "", is.url
			},
			failing:  []string{"jwks-reachable"},
			awsError: doctor.ErrRetrieveKey,
		},
		{
			name: "JWKS slower than the timeout",
			setup: func(t *testing.T, is *issuer) (string, string) {
				is.set(func(is *issuer) { is.jwksDelay = 2 * time.Second })
				return "", is.url
			},
			timeout:  300 * time.Millisecond,
			failing:  []string{"jwks-reachable"},
			awsError: doctor.ErrRetrieveKey,
		},
		{
			name: "JWKS answers 500",
			setup: func(t *testing.T, is *issuer) (string, string) {
				is.set(func(is *issuer) { is.jwksStatus = http.StatusInternalServerError })
				return "", is.url
			},
			failing:  []string{"jwks-reachable"},
			awsError: doctor.ErrRetrieveKey,
		},
		{
			name: "empty JWKS",
			setup: func(t *testing.T, is *issuer) (string, string) {
				is.setKeys(t)
				return sign(t, signing, &signing.kid, good(is)), is.url
			},
			failing:  []string{"jwks-keys"},
			awsError: doctor.ErrRetrieveKey,
		},
		{
			name: "key without alg and use",
			setup: func(t *testing.T, is *issuer) (string, string) {
				k := signing.jwk()
				k.Algorithm, k.Use = "", ""
				is.setKeys(t, k)
				return "", is.url
			},
			failing:  []string{"jwks-keys"},
			awsError: doctor.ErrRetrieveKey,
		},
		{
			name: "no discovery document",
			setup: func(t *testing.T, is *issuer) (string, string) {
				is.set(func(is *issuer) { is.discoveryOff = true })
				return "", is.url
			},
			failing:  []string{"discovery"},
			awsError: doctor.ErrRetrieveKey,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is := newIssuer(t, signing.jwk())
			token, issuerURL := tc.setup(t, is)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			rep := doctor.Run(ctx, doctor.Config{IssuerURL: issuerURL, RootCAs: is.roots, Token: token, Timeout: tc.timeout})
			var text strings.Builder
			if err := rep.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			t.Logf("report:\n%s", text.String())
			var failed []string
			for _, r := range rep.Results {
				if r.Status == doctor.Fail {
					failed = append(failed, r.Name)
					if r.Fix == "" {
						t.Errorf("%s failed without a fix", r.Name)
					}
				}
				if token != "" && strings.HasPrefix(r.Name, "token-") && r.Status == doctor.Skip && len(tc.failing) == 0 {
					t.Errorf("%s skipped with a token and a healthy issuer: %s", r.Name, r.Detail)
				}
			}
			if strings.Join(failed, ",") != strings.Join(tc.failing, ",") {
				t.Fatalf("failed checks %v, want %v", failed, tc.failing)
			}
			if rep.Failed() != (len(tc.failing) > 0) {
				t.Errorf("Failed() = %v", rep.Failed())
			}
			if len(tc.failing) > 0 {
				r, _ := rep.Result(tc.failing[0])
				if !strings.HasPrefix(r.AWSError, tc.awsError) {
					t.Errorf("%s names AWS error %q, want %q", r.Name, r.AWSError, tc.awsError)
				}
				if !strings.Contains(text.String(), "FAIL "+r.Name+": ") || !strings.Contains(text.String(), "fix: ") {
					t.Errorf("text report lacks the FAIL line or its fix")
				}
			}
		})
	}
}

// TestDoctorUntrustedCertificate: a chain STS would not trust is a discovery failure.
func TestDoctorUntrustedCertificate(t *testing.T) {
	is := newIssuer(t, newTestKey(t).jwk())
	rep := doctor.Run(context.Background(), doctor.Config{IssuerURL: is.url, RootCAs: x509.NewCertPool()})
	r, _ := rep.Result("discovery")
	if r.Status != doctor.Fail || !strings.Contains(r.Detail, "certificate") {
		t.Fatalf("discovery = %+v, want a certificate failure", r)
	}
}

// TestDoctorJSON: the JSON report round-trips with every check named.
func TestDoctorJSON(t *testing.T) {
	is := newIssuer(t, newTestKey(t).jwk())
	rep := doctor.Run(context.Background(), doctor.Config{IssuerURL: is.url, RootCAs: is.roots})
	var b strings.Builder
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		IssuerURL string `json:"issuerURL"`
		Results   []struct {
			Name, Status string
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(b.String()), &got); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if got.IssuerURL != is.url || len(got.Results) != len(rep.Results) || got.Results[0].Name != "issuer-url" || got.Results[0].Status != "PASS" {
		t.Fatalf("JSON report %+v", got)
	}
}

func newTLSConfig() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS12} }
