package testcluster

import (
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// signingErrors checks how service-account tokens are to be signed: by SigningKeyPEM (with
// optional VerificationKeysPEM), or by the external signer at ServiceAccountSigningEndpoint, never
// both, since kube-apiserver refuses --service-account-signing-endpoint together with
// --service-account-key-file or --service-account-signing-key-file.
func (cfg Config) signingErrors() []error {
	if cfg.ServiceAccountSigningEndpoint != "" {
		if len(cfg.SigningKeyPEM) > 0 || len(cfg.VerificationKeysPEM) > 0 {
			return []error{errors.New("SigningKeyPEM and VerificationKeysPEM must be empty with ServiceAccountSigningEndpoint: kube-apiserver takes its keys from the external signer only")}
		}
		return nil
	}
	if b, _ := pem.Decode(cfg.SigningKeyPEM); b == nil || !strings.Contains(b.Type, "PRIVATE KEY") {
		return []error{errors.New("SigningKeyPEM must hold a PEM private key")}
	}
	return nil
}

// serviceAccountSigningArgs returns the kube-apiserver flags that make it sign service-account
// tokens as cfg says: the external signer's endpoint, or the key files it writes into keyDir.
func serviceAccountSigningArgs(keyDir string, cfg Config) ([]string, error) {
	if cfg.ServiceAccountSigningEndpoint != "" {
		// No key files: clear the ones an earlier configuration of this apiserver left, so that
		// the directory shows what it runs with.
		if err := os.RemoveAll(keyDir); err != nil {
			return nil, fmt.Errorf("clearing service-account key directory: %w", err)
		}
		return []string{"--service-account-signing-endpoint=" + cfg.ServiceAccountSigningEndpoint}, nil
	}
	signingKey, keyFiles, err := writeServiceAccountKeys(keyDir, cfg)
	if err != nil {
		return nil, err
	}
	args := []string{"--service-account-signing-key-file=" + signingKey}
	for _, f := range keyFiles {
		args = append(args, "--service-account-key-file="+f)
	}
	return args, nil
}
