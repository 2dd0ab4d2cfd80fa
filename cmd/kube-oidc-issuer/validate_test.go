package main

import (
	"testing"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
)

// issuerURLCommands run every command that takes --issuer-url with it set to url and everything
// else it needs set to something that would fail if it were used (missing files, unreachable
// AWS), so that the test shows the URL is refused first. A new command with --issuer-url belongs
// here: the test then holds it to the same rules, with the same message.
func issuerURLCommands(t *testing.T) map[string]func(url string) []string {
	missing := t.TempDir() + "/missing"
	const tp = "9e99a48a9960b14926bb7f3b02e22da2b0ab7280"
	return map[string]func(string) []string{
		"serve":     func(u string) []string { return []string{"serve", "--issuer-url", u, "--key-file", missing} },
		"discovery": func(u string) []string { return []string{"discovery", "--issuer-url", u, "--public-key", missing} },
		"mirror": func(u string) []string {
			return []string{"mirror", "--issuer-url", u, "--key-file", missing, "--mirror", "file://" + missing}
		},
		"register": func(u string) []string { return []string{"register", "--issuer-url", u, "--thumbprint", tp} },
		"trust-policy": func(u string) []string {
			return []string{"trust-policy", "--issuer-url", u, "--service-account", "a/b", "--account-id", "123456789012"}
		},
		"doctor":     func(u string) []string { return []string{"doctor", "--issuer-url", u, "--token", missing} },
		"iam-policy": func(u string) []string { return []string{"iam-policy", "--issuer-url", u} },
	}
}

// TestEveryCommandValidatesTheIssuerURL: one set of issuer rules for every command, checked before
// anything is read or contacted, with the same message everywhere.
func TestEveryCommandValidatesTheIssuerURL(t *testing.T) {
	noAWS(t)
	for _, bad := range []string{
		"https://oidc.example.com/c/../d",
		"https://oidc.example.com/c//d",
		"https://oidc.example.com/c d",
		"https://bücher.example/c",
		"HTTPS://oidc.example.com/c",
		"https://oidc.example.com/c/",
		"https://OIDC.example.com/c",
		"https://oidc.example.com:443/c",
	} {
		want := "--issuer-url: " + documents.ValidateIssuerURL(bad).Error()
		for name, args := range issuerURLCommands(t) {
			t.Run(name+" "+bad, func(t *testing.T) {
				_, _, err := run(t, "", args(bad)...)
				if err == nil || err.Error() != want {
					t.Fatalf("error\n got %v\nwant %s", err, want)
				}
			})
		}
	}
	// Every command but iam-policy (where the URL only narrows the policy) needs one.
	const required = "--issuer-url is required: the tokens' iss, byte for byte kube-apiserver's --service-account-issuer"
	for name, args := range issuerURLCommands(t) {
		if name == "iam-policy" {
			continue
		}
		t.Run(name+" without URL", func(t *testing.T) {
			_, _, err := run(t, "", args("")...)
			if err == nil || err.Error() != required {
				t.Fatalf("error\n got %v\nwant %s", err, required)
			}
		})
	}
}

// TestDurationFlagsMustBePositive: a zero or negative limit or interval is a flag error, given
// before any network I/O, not a deadline already passed that fails later as "i/o timeout".
func TestDurationFlagsMustBePositive(t *testing.T) {
	noAWS(t)
	const issuer = "https://oidc.example.com/c"
	root := t.TempDir()
	commands := []struct {
		name string
		flag string
		args []string
	}{
		{"thumbprint", "timeout", []string{"thumbprint", "https://127.0.0.1:1"}},
		{"doctor", "timeout", []string{"doctor", "--issuer-url", issuer}},
		{"register", "timeout", []string{"register", "--issuer-url", issuer, "--thumbprint", "9e99a48a9960b14926bb7f3b02e22da2b0ab7280"}},
		{"mirror", "timeout", []string{"mirror", "--issuer-url", issuer, "--key-file", rsaTestKey, "--mirror", "file://" + root}},
		{"serve", "mirror-interval", []string{"serve", "--issuer-url", issuer, "--key-file", rsaTestKey, "--mirror", "file://" + root}},
		{"keys", "timeout", []string{"keys", "list", "--admin-url", "https://127.0.0.1:1", "--token", "t"}},
	}
	for _, c := range commands {
		for _, value := range []string{"0", "-1s"} {
			t.Run(c.name+" --"+c.flag+" "+value, func(t *testing.T) {
				want := "--" + c.flag + " " + map[string]string{"0": "0s", "-1s": "-1s"}[value] + " must be positive"
				_, _, err := run(t, "", append(c.args, "--"+c.flag, value)...)
				if err == nil || err.Error() != want {
					t.Fatalf("error\n got %v\nwant %s", err, want)
				}
			})
		}
	}
}
