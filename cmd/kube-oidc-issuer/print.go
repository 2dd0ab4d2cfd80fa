package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// readKeyFiles parses every file ("-" is standard input). A file holding a private key contributes
// only its public half. Every key is published alike: these commands print documents, they do not
// know which key signs.
func readKeyFiles(stdin io.Reader, paths []string) (keys.Set, error) {
	if len(paths) == 0 {
		return keys.Set{}, errors.New("no key given: use --public-key FILE (repeatable)")
	}
	var all []keys.Key
	for _, p := range paths {
		var data []byte
		var err error
		if p == "-" {
			data, err = io.ReadAll(stdin)
		} else {
			data, err = os.ReadFile(p)
		}
		if err != nil {
			return keys.Set{}, fmt.Errorf("reading key file: %w", err)
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
document's jwks_uri points to.`,
		Example: `  kube-oidc-issuer jwks --public-key /etc/kubernetes/pki/sa.pub > jwks.json
  kubectl -n eksa-system get secret mycluster-sa -o jsonpath='{.data.tls\.crt}' | base64 -d | kube-oidc-issuer jwks --public-key -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, err := readKeyFiles(cmd.InOrStdin(), files)
			if err != nil {
				return err
			}
			body, err := keys.RenderJWKS(set, opts)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", body)
			return err
		},
	}
	cmd.Flags().StringSliceVar(&files, "public-key", nil, `PEM file with one or more keys ("-" reads standard input); repeatable`)
	cmd.Flags().BoolVar(&opts.LegacyEmptyKID, "legacy-empty-kid", false, `also publish every key with "kid": "", for tokens minted before Kubernetes 1.16`)
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
			set, err := readKeyFiles(cmd.InOrStdin(), files)
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
	cmd.Flags().StringVar(&cfg.IssuerURL, "issuer-url", "", "the issuer URL, exactly as kube-apiserver's --service-account-issuer (https, no trailing slash)")
	cmd.Flags().StringVar(&cfg.JWKSURI, "jwks-uri", "", "the JWKS URL to advertise (default: ISSUER_URL/openid/v1/jwks)")
	cmd.Flags().StringSliceVar(&files, "public-key", nil, `PEM file with one or more keys ("-" reads standard input); repeatable`)
	return cmd
}
