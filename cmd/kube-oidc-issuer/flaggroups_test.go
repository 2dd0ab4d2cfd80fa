package main

import (
	"io"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// sharedFlagDecl is one declaration of a shared flag: the command that declares it (its own flag
// or a persistent one its subcommands inherit) and the flag.
type sharedFlagDecl struct {
	command string
	flag    *pflag.Flag
}

// declaredFlags walks the whole command tree and returns, by flag name, every declaration of it.
// A persistent flag counts once, for the command that declares it, not for each subcommand.
func declaredFlags(root *cobra.Command) map[string][]sharedFlagDecl {
	out := map[string][]sharedFlagDecl{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		name := strings.TrimPrefix(c.CommandPath(), root.Name()+" ")
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			out[f.Name] = append(out[f.Name], sharedFlagDecl{command: name, flag: f})
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	return out
}

// TestSharedFlagsAreDeclaredOnce: every command that takes one of the shared flags declares it
// through its group in flaggroups.go, with the same type, default and base help text (a command
// may only append a suffix), so that no command can drift to its own wording or default.
func TestSharedFlagsAreDeclaredOnce(t *testing.T) {
	decls := declaredFlags(newRootCommand(io.Discard, io.Discard))
	for _, tc := range []struct {
		flag     string
		group    string
		typ      string
		def      string
		help     string
		commands []string // at least these declare it (a new command may join)
	}{
		{"issuer-url", groupIssuer, "string", "", issuerURLHelp,
			[]string{"discovery", "doctor", "iam-policy", "mirror", "register", "serve", "trust-policy"}},
		{"jwks-uri", groupDocuments, "string", "", jwksURIHelp, []string{"discovery", "mirror", "register", "serve"}},
		{"max-age", groupDocuments, "duration", "1h0m0s", maxAgeHelp, []string{"mirror", "serve"}},
		{"legacy-empty-kid", groupDocuments, "bool", "false", legacyEmptyKIDHelp, []string{"jwks", "mirror", "serve"}},
		{"secret", groupKeySource, "stringSlice", "[]", secretHelp, []string{"mirror", "serve"}},
		{"key-file", groupKeySource, "stringSlice", "[]", keyFileHelp, []string{"mirror", "serve"}},
		{"kubeconfig", groupKubeconfig, "string", "", kubeconfigHelp, []string{"doctor", "keys", "mirror", "serve", "signer"}},
		{"log-level", groupLog, "string", "info", logLevelHelp, []string{"mirror", "register", "serve", "signer"}},
		{"log-format", groupLog, "string", "json", logFormatHelp, []string{"serve", "signer"}},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			var got []string
			for _, d := range decls[tc.flag] {
				got = append(got, d.command)
				f := d.flag
				if g := f.Annotations[flagGroupAnnotation]; len(g) != 1 || g[0] != tc.group {
					t.Errorf("%s declares --%s itself (annotation %v), not through the %s group of flaggroups.go", d.command, tc.flag, g, tc.group)
				}
				if !strings.HasPrefix(f.Usage, tc.help) {
					t.Errorf("%s --%s help\n got %q\nwant it to start with the shared text %q", d.command, tc.flag, f.Usage, tc.help)
				}
				if f.Value.Type() != tc.typ || f.DefValue != tc.def {
					t.Errorf("%s --%s is %s with default %q, want %s with default %q", d.command, tc.flag, f.Value.Type(), f.DefValue, tc.typ, tc.def)
				}
			}
			sort.Strings(got)
			for _, want := range tc.commands {
				if !slices.Contains(got, want) {
					t.Errorf("--%s declared by %v, want it in %s too", tc.flag, got, want)
				}
			}
		})
	}
}

// TestSharedFlagsValidateAlike: a shared flag is checked with one message in every command that
// takes it, before the command reads a key or contacts anything.
func TestSharedFlagsValidateAlike(t *testing.T) {
	noAWS(t)
	missing := t.TempDir() + "/missing"
	const issuer = "https://oidc.example.com"
	for _, tc := range []struct {
		flag, value, want string
		commands          map[string][]string // command: the other arguments it needs
	}{
		{"log-level", "loud", `--log-level "loud": use debug, info, warn or error`,
			map[string][]string{"mirror": nil, "register": nil, "serve": nil, "signer": nil}},
		{"log-format", "xml", `--log-format "xml": use json or text`,
			map[string][]string{"serve": nil, "signer": nil}},
		{"jwks-uri", "http://x/jwks", `jwks URI "http://x/jwks" must be an absolute https URL without fragment`, map[string][]string{
			"serve":     {"--issuer-url", issuer, "--key-file", missing},
			"mirror":    {"--issuer-url", issuer, "--key-file", missing, "--mirror", "file://" + missing},
			"discovery": {"--issuer-url", issuer, "--public-key", missing},
			"register":  {"--issuer-url", issuer, "--thumbprint", "9e99a48a9960b14926bb7f3b02e22da2b0ab7280"},
		}},
		{"max-age", "-1s", "max-age -1s must not be negative", map[string][]string{
			"serve":  {"--issuer-url", issuer, "--key-file", missing},
			"mirror": {"--issuer-url", issuer, "--key-file", missing, "--mirror", "file://" + missing},
		}},
	} {
		for command, args := range tc.commands {
			t.Run(command+" --"+tc.flag, func(t *testing.T) {
				_, _, err := run(t, "", append([]string{command, "--" + tc.flag, tc.value}, args...)...)
				if err == nil || err.Error() != tc.want {
					t.Fatalf("error\n got %v\nwant %s", err, tc.want)
				}
			})
		}
	}
}
