package signer

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	externaljwtv1 "k8s.io/externaljwt/apis/v1"
)

func TestSignOverSocket(t *testing.T) {
	for _, tc := range []struct {
		kind, alg string
		sigLen    int // bytes of the raw signature
	}{
		{"rsa2048", "RS256", 256},
		{"rsa3072", "RS256", 384},
		{"p256", "ES256", 64},
		{"p384", "ES384", 96},
		{"p521", "ES512", 132},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			key := newKey(t, tc.kind)
			ks, err := NewStaticKeySet(key)
			if err != nil {
				t.Fatal(err)
			}
			client, _ := serveOverSocket(t, Config{Keys: ks})
			raw, claims := testClaims(t)

			resp, err := client.Sign(callCtx(t), &externaljwtv1.SignJWTRequest{Claims: claims})
			if err != nil {
				t.Fatal(err)
			}
			if err := validateHeaderLikeKubeAPIServer(resp); err != nil {
				t.Fatalf("kube-apiserver would refuse the header: %v", err)
			}
			kid := kidOf(t, key.Public())
			wantHeader := `{"alg":"` + tc.alg + `","kid":"` + kid + `","typ":"JWT"}`
			if got, _ := base64.RawURLEncoding.DecodeString(resp.Header); string(got) != wantHeader {
				t.Fatalf("header = %s, want exactly %s", got, wantHeader)
			}
			if strings.ContainsAny(resp.Header+resp.Signature, "=+/") {
				t.Fatalf("header or signature not unpadded base64url: %q %q", resp.Header, resp.Signature)
			}
			sig, err := base64.RawURLEncoding.DecodeString(resp.Signature)
			if err != nil || len(sig) != tc.sigLen {
				t.Fatalf("signature: %d bytes (err %v), want %d", len(sig), err, tc.sigLen)
			}

			token := resp.Header + "." + claims + "." + resp.Signature
			payload, h := verifyToken(t, token, key.Public())
			if !bytes.Equal(payload, raw) {
				t.Fatalf("payload = %s, want %s", payload, raw)
			}
			if h.KeyID != kid || h.Algorithm != tc.alg {
				t.Fatalf("go-jose header: kid %q alg %q", h.KeyID, h.Algorithm)
			}
		})
	}
}

func TestSignRefusesBadClaims(t *testing.T) {
	ks, err := NewStaticKeySet(newKey(t, "p256"))
	if err != nil {
		t.Fatal(err)
	}
	client, _ := serveOverSocket(t, Config{Keys: ks})
	obj := func(n int) string { // a valid JSON object of n bytes, encoded
		return base64.RawURLEncoding.EncodeToString([]byte(`{"x":"` + strings.Repeat("a", n-8) + `"}`))
	}
	atLimit := obj(DefaultMaxClaimsBytes / 4 * 3) // exactly DefaultMaxClaimsBytes once encoded
	if len(atLimit) != DefaultMaxClaimsBytes {
		t.Fatalf("test setup: %d encoded bytes", len(atLimit))
	}
	for _, tc := range []struct {
		name   string
		claims string
		code   codes.Code
	}{
		{"at the limit", atLimit, codes.OK},
		{"empty", "", codes.InvalidArgument},
		{"one byte over the limit", atLimit + "A", codes.InvalidArgument},
		{"over the gRPC message limit", strings.Repeat("A", 1<<20), codes.ResourceExhausted},
		{"padded", base64.URLEncoding.EncodeToString([]byte(`{"a":1}`)), codes.InvalidArgument},
		{"standard alphabet", base64.RawStdEncoding.EncodeToString([]byte(`{"a":"\xfb\xff"}`)), codes.InvalidArgument},
		{"canonical {}", "e30", codes.OK},
		{"non-canonical trailing bits", "e31", codes.InvalidArgument},
		{"not JSON", base64.RawURLEncoding.EncodeToString([]byte("hello")), codes.InvalidArgument},
		{"JSON array", base64.RawURLEncoding.EncodeToString([]byte(`[{"a":1}]`)), codes.InvalidArgument},
		{"truncated JSON", base64.RawURLEncoding.EncodeToString([]byte(`{"a":1`)), codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.Sign(callCtx(t), &externaljwtv1.SignJWTRequest{Claims: tc.claims})
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code = %s (%v), want %s", got, err, tc.code)
			}
			// Short messages, never an echo of the input.
			if msg := status.Convert(err).Message(); len(msg) > 200 {
				t.Fatalf("error message is %d bytes: %.80s…", len(msg), msg)
			}
		})
	}
}

func TestSignSmallerClaimsLimit(t *testing.T) {
	ks, err := NewStaticKeySet(newKey(t, "p256"))
	if err != nil {
		t.Fatal(err)
	}
	client, _ := serveOverSocket(t, Config{Keys: ks, MaxClaimsBytes: 1024})
	big := base64.RawURLEncoding.EncodeToString([]byte(`{"x":"` + strings.Repeat("a", 1024) + `"}`))
	_, err = client.Sign(callCtx(t), &externaljwtv1.SignJWTRequest{Claims: big})
	if status.Code(err) != codes.InvalidArgument && status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("claims over a 1 KiB limit: %v", err)
	}
	_, claims := testClaims(t)
	if _, err := client.Sign(callCtx(t), &externaljwtv1.SignJWTRequest{Claims: claims}); err != nil {
		t.Fatalf("normal claims under a 1 KiB limit: %v", err)
	}
}

func TestFetchKeysAndMetadata(t *testing.T) {
	active, staged, legacy := newKey(t, "rsa2048"), newKey(t, "p256"), newKey(t, "p384")
	ks, err := NewStaticKeySet(active, staged)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Publish(legacy.Public(), true); err != nil {
		t.Fatal(err)
	}
	snap, _ := ks.Snapshot(context.Background())

	for _, tc := range []struct {
		name                string
		cfg                 Config
		wantHint, wantMaxTk int64
	}{
		{"defaults", Config{Keys: ks}, 10, 86400},
		{"configured", Config{Keys: ks, RefreshHint: 3 * time.Second, MaxTokenExpiration: 10 * time.Minute}, 3, 600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, _ := serveOverSocket(t, tc.cfg)
			resp, err := client.FetchKeys(callCtx(t), &externaljwtv1.FetchKeysRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if resp.RefreshHintSeconds != tc.wantHint {
				t.Errorf("refresh hint = %d, want %d", resp.RefreshHintSeconds, tc.wantHint)
			}
			if err := resp.DataTimestamp.CheckValid(); err != nil || !resp.DataTimestamp.AsTime().Equal(snap.Updated) {
				t.Errorf("data timestamp = %v (%v), want %v", resp.DataTimestamp.AsTime(), err, snap.Updated)
			}
			want := []struct {
				pub     crypto.PublicKey
				exclude bool
			}{{active.Public(), false}, {staged.Public(), false}, {legacy.Public(), true}}
			if len(resp.Keys) != len(want) {
				t.Fatalf("%d keys, want %d", len(resp.Keys), len(want))
			}
			for i, w := range want {
				k := resp.Keys[i]
				if k.KeyId != kidOf(t, w.pub) {
					t.Errorf("key %d: kid %s, want kube-apiserver's %s", i, k.KeyId, kidOf(t, w.pub))
				}
				parsed, err := x509.ParsePKIXPublicKey(k.Key)
				if err != nil {
					t.Fatalf("key %d: not PKIX DER: %v", i, err)
				}
				if !parsed.(interface{ Equal(crypto.PublicKey) bool }).Equal(w.pub) {
					t.Errorf("key %d: wrong public key", i)
				}
				if k.ExcludeFromOidcDiscovery != w.exclude {
					t.Errorf("key %d: exclude_from_oidc_discovery = %v", i, k.ExcludeFromOidcDiscovery)
				}
			}

			md, err := client.Metadata(callCtx(t), &externaljwtv1.MetadataRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if md.MaxTokenExpirationSeconds != tc.wantMaxTk {
				t.Errorf("max token expiration = %d, want %d", md.MaxTokenExpirationSeconds, tc.wantMaxTk)
			}
		})
	}
}

func TestNewServerValidatesConfig(t *testing.T) {
	ks, err := NewStaticKeySet(newKey(t, "p256"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{Keys: ks}, true},
		{"minimum expiration", Config{Keys: ks, MaxTokenExpiration: 10 * time.Minute, RefreshHint: time.Second}, true},
		{"no keys", Config{}, false},
		{"sub-second hint", Config{Keys: ks, RefreshHint: 500 * time.Millisecond}, false},
		{"fractional hint", Config{Keys: ks, RefreshHint: 1500 * time.Millisecond}, false},
		{"negative hint", Config{Keys: ks, RefreshHint: -time.Second}, false},
		{"expiration under 10m", Config{Keys: ks, MaxTokenExpiration: 9 * time.Minute}, false},
		{"fractional expiration", Config{Keys: ks, MaxTokenExpiration: time.Hour + time.Millisecond}, false},
		{"negative claims limit", Config{Keys: ks, MaxClaimsBytes: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewServer(tc.cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("NewServer: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestInconsistentKeySetRefused: a faulty KeySet makes the signer refuse, with a status code,
// rather than mint a token nobody can verify.
func TestInconsistentKeySetRefused(t *testing.T) {
	k1, k2 := newKey(t, "p256"), newKey(t, "p256")
	sk1, _ := NewSigningKey(k1)
	sk2, _ := NewSigningKey(k2)
	now := time.Now()
	for _, tc := range []struct {
		name      string
		snap      Snapshot
		err       error
		signCode  codes.Code
		fetchCode codes.Code
	}{
		{"consistent", Snapshot{Active: sk1, Published: []PublishedKey{{Public: sk1.Public()}}, Updated: now}, nil, codes.OK, codes.OK},
		{"key set fails", Snapshot{}, errors.New("state secret unreadable"), codes.Unavailable, codes.Unavailable},
		{"active not published", Snapshot{Active: sk1, Published: []PublishedKey{{Public: sk2.Public()}}, Updated: now}, nil, codes.FailedPrecondition, codes.FailedPrecondition},
		{"active excluded", Snapshot{Active: sk1, Published: []PublishedKey{{Public: sk1.Public(), ExcludeFromOIDCDiscovery: true}}, Updated: now}, nil, codes.FailedPrecondition, codes.FailedPrecondition},
		{"no active key", Snapshot{Published: []PublishedKey{{Public: sk1.Public()}}, Updated: now}, nil, codes.FailedPrecondition, codes.FailedPrecondition},
		{"nothing published", Snapshot{Active: sk1, Updated: now}, nil, codes.FailedPrecondition, codes.FailedPrecondition},
		{"published twice", Snapshot{Active: sk1, Published: []PublishedKey{{Public: sk1.Public()}, {Public: sk1.Public()}}, Updated: now}, nil, codes.FailedPrecondition, codes.FailedPrecondition},
		{"no timestamp", Snapshot{Active: sk1, Published: []PublishedKey{{Public: sk1.Public()}}}, nil, codes.FailedPrecondition, codes.FailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ks := keySetFunc(func(context.Context) (Snapshot, error) { return tc.snap, tc.err })
			client, _ := serveOverSocket(t, Config{Keys: ks})
			_, claims := testClaims(t)
			_, err := client.Sign(callCtx(t), &externaljwtv1.SignJWTRequest{Claims: claims})
			if status.Code(err) != tc.signCode {
				t.Errorf("Sign: %v, want %s", err, tc.signCode)
			}
			_, err = client.FetchKeys(callCtx(t), &externaljwtv1.FetchKeysRequest{})
			if status.Code(err) != tc.fetchCode {
				t.Errorf("FetchKeys: %v, want %s", err, tc.fetchCode)
			}
		})
	}
}

// TestServeStopsOnContext: Serve returns nil once its context ends, and the socket is gone.
func TestServeStopsOnContext(t *testing.T) {
	ks, err := NewStaticKeySet(newKey(t, "p256"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(Config{Keys: ks, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	path := socketPath(t)
	for round := 1; round <= 2; round++ { // Serve again after a stop, as a restarted signer does
		lis, err := Listen(path)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx, lis) }()
		client := dial(t, path)
		if _, err := client.Metadata(callCtx(t), &externaljwtv1.MetadataRequest{}); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: Serve: %v", round, err)
			}
		case <-time.After(shutdownGrace + 2*time.Second):
			t.Fatalf("round %d: Serve did not return after its context ended", round)
		}
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("round %d: socket still there after Serve returned: %v", round, err)
		}
	}
}
