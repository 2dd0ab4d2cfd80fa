package clidocs_test

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/clidocs"
)

func TestMarkdown(t *testing.T) {
	root := &cobra.Command{Use: "tool", Short: "the tool"}
	root.PersistentFlags().String("log-level", "info", "how much to log")
	run := func(*cobra.Command, []string) error { return nil }
	serve := &cobra.Command{Use: "serve", Short: "serve things", Long: "Long text.", RunE: run}
	serve.Flags().StringSlice("mirror", nil, "a | b target")
	serve.Flags().Bool("dry-run", false, "change nothing")
	hidden := &cobra.Command{Use: "secret", Hidden: true, RunE: run}
	group := &cobra.Command{Use: "keys", Short: "key commands"}
	group.AddCommand(&cobra.Command{Use: "list", Short: "list keys", RunE: run})
	root.AddCommand(serve, hidden, group)

	out := string(clidocs.Markdown(root, clidocs.Options{Title: "Ref", EnvName: func(f string) string { return "T_" + strings.ToUpper(f) }}))
	tests := []struct {
		name string
		want string
		not  bool
	}{
		{"title", "# Ref\n", false},
		{"runnable command", "## tool serve\n", false},
		{"nested command", "## tool keys list\n", false},
		{"non-runnable group omitted", "## tool keys\n", true},
		{"hidden omitted", "secret", true},
		{"env column", "| `--dry-run` | `T_DRY-RUN` | bool | `false` | change nothing |", false},
		{"repeatable, pipe escaped, no default", "| `--mirror` | `T_MIRROR` | stringSlice (repeatable) | — | a \\| b target |", false},
		{"inherited flag", "| `--log-level` | `T_LOG-LEVEL` | string | `info` | how much to log |", false},
		{"index link", "- [`tool serve`](#tool-serve): serve things", false},
		{"long text", "```text\nLong text.\n```", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Contains(out, tc.want); got == tc.not {
				t.Errorf("contains %q = %v, want %v\n%s", tc.want, got, !tc.not, out)
			}
		})
	}
}
