package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/thumbprint"
)

func newThumbprintCommand() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "thumbprint URL",
		Short: "Print the thumbprint AWS IAM needs for a host: the SHA-1 of the last certificate it presents",
		Long: `Connect to the host of URL with TLS (SNI, port 443 unless the URL names one, through HTTPS_PROXY
if set), take the last certificate it presents (the top intermediate or root of its chain) and print
its SHA-1 as 40 lower-case hex digits: the value for an IAM OpenID Connect provider's thumbprint list,
what "openssl s_client -showcerts | openssl x509 -fingerprint -sha1" on the last certificate gives.
Use the host of the discovery document's jwks_uri. Details of the certificate go to stderr.

The chain must verify against the system roots (SSL_CERT_FILE and SSL_CERT_DIR are honoured); a chain
that does not, or a single self-signed certificate, is an error that shows the thumbprint, so that it
can be pinned knowingly with register --thumbprint.`,
		Example: `  kube-oidc-issuer thumbprint https://oidc.example.com/clusters/prod-1/openid/v1/jwks
  kube-oidc-issuer thumbprint s3.eu-west-1.amazonaws.com`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Before any network I/O: a deadline already passed would surface as "host
			// unreachable ... i/o timeout".
			if err := validatePositive("timeout", timeout); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			res, err := (&thumbprint.Fetcher{Timeout: timeout}).Fetch(ctx, args[0])
			if err != nil {
				return err
			}
			stderr := cmd.ErrOrStderr()
			via := ""
			if res.Proxy != "" {
				via = " via " + res.Proxy
			}
			fmt.Fprintf(stderr, "%s%s presents %d certificate(s); the last one:\n", res.Address, via, len(res.Chain))
			fmt.Fprintf(stderr, "  subject:   %s\n  issuer:    %s\n  not after: %s\n",
				res.Certificate.Subject, res.Certificate.Issuer, res.Certificate.NotAfter.UTC().Format(time.RFC3339))
			if res.LeafOnly() {
				fmt.Fprintln(stderr, "warning: the host presents only its own certificate, no CA: this thumbprint changes at every renewal")
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), res.Thumbprint)
			return err
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", thumbprint.DefaultTimeout, "give up after this long")
	return cmd
}
