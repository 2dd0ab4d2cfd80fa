package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/clidocs"
)

// configurationIntro heads docs/configuration.md.
const configurationIntro = `Generated from the command tree by ` + "`make docs`" + ` (` + "`go run ./cmd/kube-oidc-issuer gen-docs > docs/configuration.md`" + `);
do not edit by hand: a test fails when this file differs from the flags.

Every flag can also be set through an environment variable: ` + "`KUBE_OIDC_ISSUER_`" + ` followed by the flag name
in upper case with dashes as underscores. Repeatable flags take a comma-separated list there. A flag
given on the command line wins over the environment. AWS settings (credentials, region, endpoints)
come from the AWS SDK's own ` + "`AWS_*`" + ` variables, ` + "`~/.aws`" + ` and IRSA, not from flags.`

// configurationMarkdown renders the reference of every command's flags from the command tree.
func configurationMarkdown() []byte {
	root := newRootCommand(io.Discard, io.Discard)
	out := clidocs.Markdown(root, clidocs.Options{
		Title:   "Configuration reference",
		Intro:   configurationIntro,
		EnvName: EnvName,
	})
	return append(out, '\n')
}

func newGenDocsCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "gen-docs",
		Short:  "Print docs/configuration.md, generated from the command tree",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprint(cmd.OutOrStdout(), string(configurationMarkdown()))
			return err
		},
	}
}
