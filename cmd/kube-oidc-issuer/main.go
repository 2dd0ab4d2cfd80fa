// Command kube-oidc-issuer publishes a Kubernetes cluster's service-account token issuer (OIDC
// discovery document and JWKS) from the cluster's signing key, so that AWS IAM and other relying
// parties can verify the cluster's tokens.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cmd := newRootCommand(os.Stdout, os.Stderr)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
