package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Fixed public keys and their kids, computed with openssl (see keys/testdata).
const (
	rsaTestKey = "../../keys/testdata/rsa2048.pub.pem"
	rsaKID     = "1M6azHsVBk47l5Txlez7GbwfpSxG-Uv5mVXrXsx8bDo"
	ecTestKey  = "../../keys/testdata/ecp256.pub.pem"
	ecKID      = "-OP9sN_vHlkLO13uuh9o2X1pzvIj1mo69QP29QLi2m8"
)

// run executes the CLI in-process and returns stdout, stderr and the error.
func run(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := newRootCommand(&stdout, &stderr)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err := cmd.Execute()
	return stdout.String(), stderr.String(), err
}

type jwksDoc struct {
	Keys []map[string]string `json:"keys"`
}

func decodeJWKS(t *testing.T, out string) jwksDoc {
	t.Helper()
	if !strings.HasSuffix(out, "}\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("want exactly one line of compact JSON, got %q", out)
	}
	var d jwksDoc
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	return d
}

func TestJWKSCommand(t *testing.T) {
	rsaPEM, err := os.ReadFile(rsaTestKey)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		args     []string
		stdin    string
		wantKids []string
		wantErr  string
	}{
		{name: "one RSA key", args: []string{"--public-key", rsaTestKey}, wantKids: []string{rsaKID}},
		{name: "key from stdin", args: []string{"--public-key", "-"}, stdin: string(rsaPEM), wantKids: []string{rsaKID}},
		{name: "two files, comma list, sorted by kid", args: []string{"--public-key", rsaTestKey + "," + ecTestKey}, wantKids: []string{ecKID, rsaKID}},
		{name: "same key twice is published once", args: []string{"--public-key", rsaTestKey, "--public-key", rsaTestKey}, wantKids: []string{rsaKID}},
		{name: "legacy empty kid", args: []string{"--public-key", rsaTestKey, "--legacy-empty-kid"}, wantKids: []string{rsaKID, ""}},
		{name: "no key", args: nil, wantErr: "no key given"},
		{name: "missing file", args: []string{"--public-key", "/nonexistent/sa.pub"}, wantErr: "/nonexistent/sa.pub"},
		{name: "garbage", args: []string{"--public-key", "-"}, stdin: "not a key", wantErr: "-: no PEM block found"},
		{name: "stdin larger than 1 MiB", args: []string{"--public-key", "-"}, stdin: strings.Repeat("A", 1<<20+1), wantErr: "reading key file - (standard input): larger than 1 MiB"},
		{name: "directory", args: []string{"--public-key", "."}, wantErr: "reading key file .: is a directory, not a regular file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := run(t, tc.stdin, append([]string{"jwks"}, tc.args...)...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var kids []string
			for _, k := range decodeJWKS(t, out).Keys {
				kids = append(kids, k["kid"])
			}
			if strings.Join(kids, ",") != strings.Join(tc.wantKids, ",") {
				t.Fatalf("kids = %q, want %q", kids, tc.wantKids)
			}
			if tc.name == "legacy empty kid" && !strings.Contains(out, `"kid":""`) {
				t.Fatalf(`legacy key must say "kid":"" literally: %s`, out)
			}
		})
	}
}

func TestDiscoveryCommand(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		wantErr string
	}{
		{
			name: "issuer with path",
			args: []string{"--issuer-url", "https://oidc.example.com/cluster-a", "--public-key", rsaTestKey},
			want: `{"issuer":"https://oidc.example.com/cluster-a","jwks_uri":"https://oidc.example.com/cluster-a/openid/v1/jwks","response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256"]}` + "\n",
		},
		{
			name: "jwks uri override and two algorithms",
			args: []string{"--issuer-url", "https://oidc.example.com", "--jwks-uri", "https://keys.example.com/jwks.json", "--public-key", rsaTestKey, "--public-key", ecTestKey},
			want: `{"issuer":"https://oidc.example.com","jwks_uri":"https://keys.example.com/jwks.json","response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["ES256","RS256"]}` + "\n",
		},
		{
			name: "issuer from the environment",
			args: []string{"--public-key", rsaTestKey},
			env:  map[string]string{"KUBE_OIDC_ISSUER_ISSUER_URL": "https://env.example.com"},
			want: `{"issuer":"https://env.example.com","jwks_uri":"https://env.example.com/openid/v1/jwks","response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256"]}` + "\n",
		},
		{
			name: "command line beats the environment",
			args: []string{"--issuer-url", "https://flag.example.com", "--public-key", rsaTestKey},
			env:  map[string]string{"KUBE_OIDC_ISSUER_ISSUER_URL": "https://env.example.com"},
			want: `{"issuer":"https://flag.example.com","jwks_uri":"https://flag.example.com/openid/v1/jwks","response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256"]}` + "\n",
		},
		{
			name: "repeatable flag from the environment",
			args: []string{"--issuer-url", "https://oidc.example.com"},
			env:  map[string]string{"KUBE_OIDC_ISSUER_PUBLIC_KEY": rsaTestKey + "," + ecTestKey},
			want: `{"issuer":"https://oidc.example.com","jwks_uri":"https://oidc.example.com/openid/v1/jwks","response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["ES256","RS256"]}` + "\n",
		},
		{name: "trailing slash", args: []string{"--issuer-url", "https://oidc.example.com/", "--public-key", rsaTestKey}, wantErr: `ends with a slash`},
		{name: "http", args: []string{"--issuer-url", "http://oidc.example.com", "--public-key", rsaTestKey}, wantErr: `only over HTTPS`},
		{name: "no issuer", args: []string{"--public-key", rsaTestKey}, wantErr: "--issuer-url is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			out, _, err := run(t, "", append([]string{"discovery"}, tc.args...)...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out != tc.want {
				t.Fatalf("got  %s\nwant %s", out, tc.want)
			}
		})
	}
}

func TestEnvironmentErrorsNameTheVariable(t *testing.T) {
	t.Setenv("KUBE_OIDC_ISSUER_MAX_AGE", "an hour")
	_, _, err := run(t, "", "serve", "--issuer-url", "https://oidc.example.com", "--key-file", rsaTestKey)
	if err == nil || !strings.Contains(err.Error(), "KUBE_OIDC_ISSUER_MAX_AGE") {
		t.Fatalf("err = %v, want it to name KUBE_OIDC_ISSUER_MAX_AGE", err)
	}
}

func TestServeRefusesBadConfiguration(t *testing.T) {
	dir := t.TempDir()
	cert := filepath.Join(dir, "tls.crt")
	cases := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no source", []string{"--issuer-url", "https://oidc.example.com"}, "no key source"},
		{"secret without namespace", []string{"--issuer-url", "https://oidc.example.com", "--secret", "cluster-sa"}, `want NAMESPACE/NAME`},
		{"secret with extra slash", []string{"--issuer-url", "https://oidc.example.com", "--secret", "a/b/c"}, `want NAMESPACE/NAME`},
		{"query in issuer", []string{"--issuer-url", "https://oidc.example.com?x=1", "--key-file", rsaTestKey}, "has a query"},
		{"http jwks uri", []string{"--issuer-url", "https://oidc.example.com", "--jwks-uri", "http://x/jwks", "--key-file", rsaTestKey}, "https"},
		{"half a TLS pair", []string{"--issuer-url", "https://oidc.example.com", "--key-file", rsaTestKey, "--tls-cert-file", cert}, "go together"},
		{"bad log level", []string{"--issuer-url", "https://oidc.example.com", "--key-file", rsaTestKey, "--log-level", "loud"}, "--log-level"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, "", append([]string{"serve"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	out, _, err := run(t, "", "version")
	if err != nil || !strings.HasPrefix(out, "kube-oidc-issuer ") {
		t.Fatalf("version: %q %v", out, err)
	}
}
