package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/version"
)

// envPrefix is prepended to a flag's name, upper-cased with dashes as underscores, to form the
// environment variable that sets it: --issuer-url ⇔ KUBE_OIDC_ISSUER_ISSUER_URL.
const envPrefix = "KUBE_OIDC_ISSUER_"

// EnvName is the environment variable that sets flag name.
func EnvName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "kube-oidc-issuer",
		Short: "Publish a Kubernetes cluster's service-account token issuer for AWS IAM and other relying parties",
		Long: `kube-oidc-issuer serves (and prints) the OIDC discovery document and JWKS for a Kubernetes
cluster's service-account tokens, from the cluster's signing key.

Every flag can also be set through an environment variable: KUBE_OIDC_ISSUER_ followed by the flag
name in upper case with dashes as underscores (--issuer-url: KUBE_OIDC_ISSUER_ISSUER_URL).
Repeatable flags take a comma-separated list there. A flag given on the command line wins.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags())
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		newServeCommand(),
		newSignerCommand(),
		newMirrorCommand(),
		newKeysCommand(),
		newJWKSCommand(),
		newDiscoveryCommand(),
		newVersionCommand(),
		newRegisterCommand(),
		newThumbprintCommand(),
		newTrustPolicyCommand(),
		newIAMPolicyCommand(),
		newDoctorCommand(),
		newGenDocsCommand(),
	)
	return root
}

// applyEnv sets every flag not given on the command line from its environment variable.
func applyEnv(flags *pflag.FlagSet) error {
	var errs []string
	flags.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" {
			return
		}
		val, ok := os.LookupEnv(EnvName(f.Name))
		if !ok {
			return
		}
		if err := flags.Set(f.Name, val); err != nil {
			errs = append(errs, fmt.Sprintf("%s=%q: %v", EnvName(f.Name), val, err))
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("invalid environment: %s", strings.Join(errs, "; "))
	}
	return nil
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), version.Get())
			return err
		},
	}
}

// newLogger builds the process logger. Logs go to stderr so that commands printing documents keep
// stdout clean.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use json or text", format)
}
