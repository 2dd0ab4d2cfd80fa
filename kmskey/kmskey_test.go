package kmskey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
)

// startMoto runs a real moto_server (its KMS) for the test.
func startMoto(t *testing.T) *kms.Client {
	t.Helper()
	if testing.Short() {
		t.Skip("needs moto_server (run without -short)")
	}
	return kms.NewFromConfig(harness.StartMotoT(t, harness.MotoConfig{}).AWSConfig())
}

// TestSignersAgainstMoto proves against moto_server what it does right: CreateKey (tagged),
// GetPublicKey and Sign with MessageType RAW, for RSA_2048 and ECC_NIST_P256; every signature is
// checked here once more with the public key. What moto cannot prove: the real service's
// authorization (the policy of Policy), its latency, key states (disabled, pending deletion) and
// DIGEST signing, which moto gets wrong.
func TestSignersAgainstMoto(t *testing.T) {
	api := startMoto(t)
	ctx := t.Context()
	msg := []byte("eyJhbGciOiJSUzI1NiIsImtpZCI6IngiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ4In0")
	for _, alg := range []string{"RS256", "ES256"} {
		t.Run(alg, func(t *testing.T) {
			s, err := Create(ctx, api, alg, "test key", map[string]string{ManagedByTag: ManagedByValue, StateSecretTag: "kube-system/state"})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(s.ARN(), "arn:aws:kms:") {
				t.Fatalf("ARN %q", s.ARN())
			}
			tags, err := api.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: aws.String(s.ARN())})
			if err != nil {
				t.Fatal(err)
			}
			if len(tags.Tags) != 2 {
				t.Fatalf("tags %v, want managed-by and state-secret", tags.Tags)
			}
			sig, err := s.SignMessage(nil, msg, crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			digest := sha256.Sum256(msg)
			switch k := s.Public().(type) {
			case *rsa.PublicKey:
				if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig); err != nil {
					t.Fatalf("RS256 signature: %v", err)
				}
			case *ecdsa.PublicKey:
				if !ecdsa.VerifyASN1(k, digest[:], sig) {
					t.Fatal("ES256 signature does not verify")
				}
			}
			// Reopened from its ARN alone, it is the same key.
			again, err := Open(ctx, api, s.ARN())
			if err != nil {
				t.Fatal(err)
			}
			if !again.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(s.Public()) {
				t.Fatal("reopened key has another public key")
			}
			// moto signs a DIGEST as if it were the message: the local verification refuses the
			// answer instead of letting a token nobody can verify out.
			if _, err := s.Sign(nil, digest[:], crypto.SHA256); err == nil || !strings.Contains(err.Error(), "does not verify") {
				t.Fatalf("DIGEST signing on moto: %v, want the wrong signature refused", err)
			}
			if _, err := s.SignMessage(nil, msg, crypto.SHA512); err == nil {
				t.Fatal("signed with another hash")
			}
		})
	}
	enc, err := api.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecSymmetricDefault, KeyUsage: types.KeyUsageTypeEncryptDecrypt})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, api, *enc.KeyMetadata.Arn); err == nil {
		t.Fatal("opened an ENCRYPT_DECRYPT key as a signing key")
	}
	if _, err := Create(ctx, api, "HS256", "x", nil); err == nil {
		t.Fatal("created a key for HS256")
	}
}
