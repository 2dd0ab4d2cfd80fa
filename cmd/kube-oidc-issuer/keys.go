package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/admin"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/boundedread"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// keysOptions are the flags every `keys` subcommand shares.
type keysOptions struct {
	adminURL   string
	token      string
	tokenFile  string
	kubeconfig string
	caFile     string
	output     string
	timeout    time.Duration
	// cluster (NAMESPACE/NAME) targets one cluster of a fleet.
	cluster string
}

func newKeysCommand() *cobra.Command {
	o := &keysOptions{}
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage the signing-key lifecycle through a running issuer's admin API",
		Long: `List, stage, promote and retire service-account signing keys through the admin API of a running
"serve --state-secret ... --admin-listen ...".

The bearer token is --token, else the contents of --token-file, else the credentials of the
kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config: token, token file or exec plugin). Kubernetes
tokens are checked by the issuer with a TokenReview and authorized with a SubjectAccessReview on the
non-resource URL /admin/v1/keys[/...] with the verbs get, post and delete.

A safe rotation: stage, wait for the publish lead (the JWKS max-age plus mirror time, shown by
"list" as promotableAt), promote, restart the control plane with the signing-key Secret's contents.
The previous key stays published, and in the Secret's verification bundle, until its publishUntil.`,
		Example: `  kube-oidc-issuer keys list --admin-url https://issuer.kube-system.svc:8444 --admin-ca-file ca.crt
  kube-oidc-issuer keys stage --algorithm ES256 --admin-url https://127.0.0.1:8444 --token-file admin.token
  kube-oidc-issuer keys promote KID --admin-url https://127.0.0.1:8444
  kube-oidc-issuer keys retire KID --force --admin-url https://127.0.0.1:8444`,
	}
	f := cmd.PersistentFlags()
	f.StringVar(&o.adminURL, "admin-url", "", "base URL of the issuer's admin listener, https://HOST:PORT (required)")
	f.StringVar(&o.token, "token", "", "bearer token")
	f.StringVar(&o.cluster, "cluster", "", "fleet mode: NAMESPACE/NAME of the cluster whose keys to act on (the admin API's /admin/v1/clusters/NAMESPACE/NAME/keys)")
	f.StringVar(&o.tokenFile, "token-file", "", "file holding the bearer token")
	kubeconfigFlag{&o.kubeconfig}.add(f, ", whose credentials are used when neither --token nor --token-file is given (default: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&o.caFile, "admin-ca-file", "", "CA certificate(s) that signed the admin listener's certificate (default: the system roots)")
	f.StringVarP(&o.output, "output", "o", "table", "table or json")
	f.DurationVar(&o.timeout, "timeout", 60*time.Second, "how long to wait for the answer")

	var algorithm string
	stage := &cobra.Command{
		Use:   "stage",
		Short: "Generate a key and publish it ahead of signing (409 if one is staged already)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, func(ctx context.Context, c *admin.Client) (any, error) { return c.Stage(ctx, algorithm) })
		},
	}
	stage.Flags().StringVar(&algorithm, "algorithm", "RS256", "RS256 or ES256")

	var force bool
	promote := &cobra.Command{
		Use:   "promote [--force] [--] KID",
		Short: "Write the staged key into the signing-key Secret (refused before the publish lead unless --force)",
		Long: `Write the staged key into the signing-key Secret (refused before the publish lead unless --force).

A kid is base64url and may begin with '-' (about one in 64): put -- before it, or it is taken for
a flag.`,
		Example: "  kube-oidc-issuer keys --admin-url https://oidc-admin:8444 promote -- -rz5WJaoQ...",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, func(ctx context.Context, c *admin.Client) (any, error) { return c.Promote(ctx, args[0], force) })
		},
	}
	promote.Flags().BoolVar(&force, "force", false, "promote before the publish lead has passed (relying parties with a cached JWKS reject the new key's tokens until their cache expires)")

	var retireForce bool
	retire := &cobra.Command{
		Use:   "retire [--force] [--] KID",
		Short: "Withdraw a staged key, or stop publishing a previous key early (--force inside its retention, e.g. after a compromise)",
		Long: `Withdraw a staged key, or stop publishing a previous key early (--force inside its retention,
e.g. after a compromise).

A kid is base64url and may begin with '-' (about one in 64): put -- before it, or it is taken for
a flag.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, func(ctx context.Context, c *admin.Client) (any, error) { return c.Remove(ctx, args[0], retireForce) })
		},
	}
	retire.Flags().BoolVar(&retireForce, "force", false, "retire a previous key inside its retention window: tokens it signed are rejected from then on")

	list := &cobra.Command{
		Use:   "list",
		Short: "Show every key in the lifecycle",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, func(ctx context.Context, c *admin.Client) (any, error) { return c.List(ctx) })
		},
	}
	cmd.AddCommand(list, stage, promote, retire)
	return cmd
}

func (o *keysOptions) run(cmd *cobra.Command, call func(context.Context, *admin.Client) (any, error)) error {
	if o.output != "table" && o.output != "json" {
		return fmt.Errorf("--output %q: use table or json", o.output)
	}
	if err := validatePositive("timeout", o.timeout); err != nil {
		return err
	}
	client, err := o.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
	defer cancel()
	res, err := call(ctx, client)
	if err != nil {
		return err
	}
	if o.output == "json" {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	return printKeys(cmd.OutOrStdout(), res)
}

// client builds the admin client: TLS trusting --admin-ca-file, and the token from --token,
// --token-file, or the kubeconfig's credentials (through client-go's wrappers, so token files and
// exec plugins work).
func (o *keysOptions) client() (*admin.Client, error) {
	if o.adminURL == "" {
		return nil, errors.New("--admin-url is required")
	}
	if o.token != "" && o.tokenFile != "" {
		return nil, errors.New("--token and --token-file exclude each other")
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.caFile != "" {
		pem, err := boundedread.ReadFile(o.caFile, keys.MaxFileSize)
		if err != nil {
			return nil, fmt.Errorf("reading --admin-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--admin-ca-file %s holds no PEM certificate", o.caFile)
		}
		tlsCfg.RootCAs = pool
	}
	var rt http.RoundTripper = &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment}
	token := o.token
	switch {
	case o.tokenFile != "":
		b, err := boundedread.ReadFile(o.tokenFile, keys.MaxFileSize)
		if err != nil {
			return nil, fmt.Errorf("reading --token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return nil, fmt.Errorf("--token-file %s is empty", o.tokenFile)
		}
	case token == "":
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = o.kubeconfig
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("no --token or --token-file, and no kubeconfig credentials: %w", err)
		}
		if cfg.BearerToken == "" && cfg.BearerTokenFile == "" && cfg.ExecProvider == nil && cfg.AuthProvider == nil {
			return nil, errors.New("the kubeconfig user has no bearer token (client certificates cannot be used with the admin API): give --token or --token-file")
		}
		// Only the credentials: the admin listener has its own CA, not the API server's.
		creds := rest.AnonymousClientConfig(cfg)
		creds.BearerToken, creds.BearerTokenFile, creds.ExecProvider, creds.AuthProvider = cfg.BearerToken, cfg.BearerTokenFile, cfg.ExecProvider, cfg.AuthProvider
		creds.AuthConfigPersister = cfg.AuthConfigPersister
		if rt, err = rest.HTTPWrappersForConfig(creds, rt); err != nil {
			return nil, fmt.Errorf("using the kubeconfig credentials: %w", err)
		}
	}
	c, err := admin.NewClient(o.adminURL, &http.Client{Transport: rt}, token)
	if err != nil || o.cluster == "" {
		return c, err
	}
	ns, name, ok := strings.Cut(o.cluster, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("--cluster %q: want NAMESPACE/NAME", o.cluster)
	}
	return c.Cluster(ns, name), nil
}

func printKeys(w io.Writer, res any) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k admin.Key) {
		until := ""
		switch {
		case k.PublishUntil != nil:
			until = "until " + k.PublishUntil.Format(time.RFC3339)
		case k.PromotableAt != nil:
			until = "promotable " + k.PromotableAt.Format(time.RFC3339)
		}
		bundle := "-"
		if k.InBundle {
			bundle = "yes"
		}
		signing := "-"
		switch {
		case k.Signing:
			signing = "yes"
		case k.LastSigned != nil:
			signing = "last " + k.LastSigned.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.KID, k.Phase, k.Algorithm, k.Created.Format(time.RFC3339), bundle, signing, until)
	}
	header := func() { fmt.Fprintln(tw, "KID\tPHASE\tALG\tCREATED\tIN BUNDLE\tSIGNING\tNEXT") }
	switch v := res.(type) {
	case admin.KeyList:
		header()
		for _, k := range v.Keys {
			row(k)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "\nstate %s, signing key %s, publish lead %s, retention %s\n", v.StateSecret, v.SigningSecret, v.PublishLead, v.Retention); err != nil {
			return err
		}
		return printControlPlane(w, v.ControlPlane)
	case admin.KeyResult:
		header()
		row(v.Key)
		if err := tw.Flush(); err != nil {
			return err
		}
		_, err := fmt.Fprintf(w, "\n%s", v.Result)
		if err == nil && v.Note != "" {
			_, err = fmt.Fprintf(w, ": %s", v.Note)
		}
		if err == nil {
			_, err = fmt.Fprintln(w)
		}
		if err == nil && v.Result == "promoted" {
			err = printControlPlane(w, v.ControlPlane)
		}
		return err
	}
	return fmt.Errorf("unexpected result %T", res)
}

func printControlPlane(w io.Writer, cp *admin.ControlPlaneSigning) error {
	if cp == nil {
		_, err := fmt.Fprintln(w, "control plane signs with: not observed (no signing probe)")
		return err
	}
	_, err := fmt.Fprintf(w, "control plane signs with: %s (seen %s)\n", strings.Join(cp.KIDs, ", "), cp.ObservedAt.Format(time.RFC3339))
	return err
}
