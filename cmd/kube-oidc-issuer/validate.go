package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
)

// validateIssuerURLFlag checks --issuer-url with the one set of issuer rules every command
// applies (documents.ValidateIssuerURL), so that serve, discovery, mirror, register, trust-policy
// and doctor accept and refuse the same URLs with the same message. Commands call it before they
// read a file or touch the network.
func validateIssuerURLFlag(issuerURL string) error {
	if issuerURL == "" {
		return errors.New("--issuer-url is required: the tokens' iss, byte for byte kube-apiserver's --service-account-issuer")
	}
	if err := documents.ValidateIssuerURL(issuerURL); err != nil {
		return fmt.Errorf("--issuer-url: %w", err)
	}
	return nil
}

// validatePositive checks a duration flag that bounds or paces work: zero or a negative value
// would not be taken as "no limit" but as a deadline already passed (or a ticker that panics),
// and the command would fail later with a misleading error such as an i/o timeout.
func validatePositive(flag string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("--%s %s must be positive", flag, d)
	}
	return nil
}
