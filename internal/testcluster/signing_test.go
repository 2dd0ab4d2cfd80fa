package testcluster

import (
	"crypto/elliptic"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
)

func TestServiceAccountSigningArgs(t *testing.T) {
	priv, pub, err := pki.GenerateECDSAKeyPEM(elliptic.P256())
	if err != nil {
		t.Fatal(err)
	}
	const endpoint = "/run/kube-oidc-issuer/signer.sock"
	for _, tc := range []struct {
		name     string
		cfg      Config
		wantErr  string   // from signingErrors
		wantArgs []string // with KEYDIR for the key directory
	}{
		{
			name:     "signing key only",
			cfg:      Config{SigningKeyPEM: priv},
			wantArgs: []string{"--service-account-signing-key-file=KEYDIR/signing.key", "--service-account-key-file=KEYDIR/signing.key"},
		},
		{
			name: "signing key and a verification key",
			cfg:  Config{SigningKeyPEM: priv, VerificationKeysPEM: [][]byte{pub}},
			wantArgs: []string{"--service-account-signing-key-file=KEYDIR/signing.key",
				"--service-account-key-file=KEYDIR/signing.key", "--service-account-key-file=KEYDIR/verify-00.pem"},
		},
		{
			name:     "external signer: the endpoint and no key file",
			cfg:      Config{ServiceAccountSigningEndpoint: endpoint},
			wantArgs: []string{"--service-account-signing-endpoint=" + endpoint},
		},
		{name: "external signer and a signing key", cfg: Config{ServiceAccountSigningEndpoint: endpoint, SigningKeyPEM: priv}, wantErr: "must be empty with ServiceAccountSigningEndpoint"},
		{name: "external signer and a verification key", cfg: Config{ServiceAccountSigningEndpoint: endpoint, VerificationKeysPEM: [][]byte{pub}}, wantErr: "must be empty with ServiceAccountSigningEndpoint"},
		{name: "neither", cfg: Config{}, wantErr: "SigningKeyPEM must hold a PEM private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := tc.cfg.signingErrors()
			if tc.wantErr != "" {
				if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.wantErr) {
					t.Fatalf("signingErrors = %v, want %q", errs, tc.wantErr)
				}
				return
			}
			if len(errs) != 0 {
				t.Fatalf("valid configuration refused: %v", errs)
			}
			keyDir := filepath.Join(t.TempDir(), "serviceaccount")
			// A key file left by an earlier configuration of the same apiserver.
			if err := os.MkdirAll(keyDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(keyDir, "verify-07.pem"), pub, 0o600); err != nil {
				t.Fatal(err)
			}
			args, err := serviceAccountSigningArgs(keyDir, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			want := make([]string, len(tc.wantArgs))
			for i, a := range tc.wantArgs {
				want[i] = strings.ReplaceAll(a, "KEYDIR", keyDir)
			}
			if !slices.Equal(args, want) {
				t.Fatalf("args = %q\nwant   %q", args, want)
			}
			if _, err := os.Stat(filepath.Join(keyDir, "verify-07.pem")); err == nil {
				t.Fatal("a stale key file survived")
			}
		})
	}
}
