package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/boundedread"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// readKeyFiles parses every file ("-" is standard input). A file holding a private key contributes
// only its public half. Every key is published alike: these commands print documents, they do not
// know which key signs.
//
// Reads are bounded and cannot hang, as serve's are: a file must be a regular file of at most
// keys.MaxFileSize bytes, opened without blocking (a FIFO or /dev/zero is refused at once, see
// keys.ReadFile); standard input is read up to the same size and given up when ctx ends (SIGINT
// or SIGTERM), since a terminal or a pipe whose writer never closes would otherwise wait for ever.
func readKeyFiles(ctx context.Context, stdin io.Reader, paths []string) (keys.Set, error) {
	if len(paths) == 0 {
		return keys.Set{}, errors.New("no key given: use --public-key FILE (repeatable)")
	}
	var all []keys.Key
	for _, p := range paths {
		var data []byte
		var err error
		if p == "-" {
			data, err = boundedread.ReadAll(ctx, stdin, keys.MaxFileSize)
			if err != nil {
				err = fmt.Errorf("reading key file - (standard input): %w", err)
			}
		} else {
			data, err = keys.ReadFile(p)
		}
		if err != nil {
			return keys.Set{}, err
		}
		pubs, err := keys.ParsePEM(p, data)
		if err != nil {
			return keys.Set{}, err
		}
		for _, k := range pubs {
			all = append(all, keys.Key{Public: k, Phase: keys.PhasePublished})
		}
	}
	return keys.NewSet(all...), nil
}

func newJWKSCommand() *cobra.Command {
	var files []string
	var opts keys.JWKSOptions
	cmd := &cobra.Command{
		Use:   "jwks --public-key FILE...",
		Short: "Print the JWKS for the given service-account keys, exactly as the issuer serves it",
		Long: `Print the JSON Web Key Set for one or more service-account public keys (PEM: PUBLIC KEY,
RSA PUBLIC KEY, CERTIFICATE; a private key file contributes only its public key). Key IDs are those
kube-apiserver puts in the tokens it signs. Upload the output as the object your discovery
document's jwks_uri points to.

Each --public-key must be a regular file of at most 1 MiB, as for serve's --key-file: a named pipe,
a device or a directory is refused at once, never waited on. AWS STS accepts at most 100 keys in a
JWKS (--legacy-empty-kid counts every key twice); above that a warning is printed on standard error
and the JWKS is printed all the same.`,
		Example: `  kube-oidc-issuer jwks --public-key /etc/kubernetes/pki/sa.pub > jwks.json
  kubectl -n eksa-system get secret mycluster-sa -o jsonpath='{.data.tls\.crt}' | base64 -d | kube-oidc-issuer jwks --public-key -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, err := readKeyFiles(cmd.Context(), cmd.InOrStdin(), files)
			if err != nil {
				return err
			}
			body, err := keys.RenderJWKS(set, opts)
			if err != nil {
				return err
			}
			if n := keys.JWKSEntries(set, opts); n > keys.AWSMaxJWKSKeys {
				// Printed all the same: the JWKS is right for other relying parties.
				fmt.Fprintf(cmd.ErrOrStderr(), "Warning: the JWKS holds %d keys; AWS STS accepts at most %d and rejects tokens with \"Couldn't retrieve verification key\" above that. Publish fewer keys for AWS.\n", n, keys.AWSMaxJWKSKeys)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", body)
			return err
		},
	}
	cmd.Flags().StringSliceVar(&files, "public-key", nil, `PEM file with one or more keys, a regular file of at most 1 MiB ("-" reads standard input, up to 1 MiB); repeatable`)
	addLegacyEmptyKIDFlag(cmd.Flags(), &opts.LegacyEmptyKID)
	return cmd
}

func newDiscoveryCommand() *cobra.Command {
	var files []string
	var cfg documents.Config
	cmd := &cobra.Command{
		Use:   "discovery --issuer-url URL --public-key FILE...",
		Short: "Print the OIDC discovery document, exactly as the issuer serves it",
		Long: `Print the OIDC discovery document (.well-known/openid-configuration) for an issuer URL and its
keys (the keys decide id_token_signing_alg_values_supported).`,
		Example: `  kube-oidc-issuer discovery --issuer-url https://oidc.example.com/cluster-a --public-key sa.pub`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := validateDocumentFlags(cfg); err != nil {
				return err
			}
			set, err := readKeyFiles(cmd.Context(), cmd.InOrStdin(), files)
			if err != nil {
				return err
			}
			cfg.MaxAge = documents.DefaultMaxAge
			docs, err := documents.Render(cfg, set, 1, time.Now())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", docs.Discovery.Body)
			return err
		},
	}
	documentFlags{&cfg}.addURLs(cmd.Flags(), "")
	cmd.Flags().StringSliceVar(&files, "public-key", nil, `PEM file with one or more keys, a regular file of at most 1 MiB ("-" reads standard input, up to 1 MiB); repeatable`)
	return cmd
}
