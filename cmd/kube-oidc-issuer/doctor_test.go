package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDoctorCommandValidation: mistakes in the flags are errors before anything is fetched.
func TestDoctorCommandValidation(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	const u = "https://oidc.example.com/c"
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no issuer URL", nil, "--issuer-url is required"},
		{"bad output", []string{"--issuer-url", u, "--output", "yaml"}, `--output "yaml"`},
		{"missing CA file", []string{"--issuer-url", u, "--ca-file", filepath.Join(dir, "nope")}, "reading --ca-file"},
		{"CA file without PEM", []string{"--issuer-url", u, "--ca-file", notPEM}, "holds no PEM certificate"},
		{"missing token file", []string{"--issuer-url", u, "--token", filepath.Join(dir, "nope")}, "reading --token"},
		{"empty token file", []string{"--issuer-url", u, "--token", empty}, "is empty"},
		{"file mirror", []string{"--issuer-url", u, "--mirror", "file:///srv/www"}, "s3:// mirrors only"},
		{"mirror not matching an S3 issuer URL", []string{"--issuer-url", "https://s3.eu-west-1.amazonaws.com/aaa", "--mirror", "s3://bbb"}, "does not match"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, "", append([]string{"doctor"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestDoctorMirrorURLs: the objects are looked up where serve --mirror puts them.
func TestDoctorMirrorURLs(t *testing.T) {
	t.Setenv("AWS_ENDPOINT_URL_S3", "")
	t.Setenv("AWS_ENDPOINT_URL", "")
	t.Setenv("AWS_REGION", "")
	tests := []struct {
		name      string
		o         doctorOptions
		target    string
		wantDisco string
	}{
		{"path-style AWS issuer URL", doctorOptions{issuerURL: "https://s3.eu-west-1.amazonaws.com/bkt/c1"}, "s3://bkt",
			"https://s3.eu-west-1.amazonaws.com/bkt/c1/.well-known/openid-configuration"},
		{"virtual-hosted AWS issuer URL", doctorOptions{issuerURL: "https://bkt.s3.eu-west-1.amazonaws.com/c1"}, "s3://bkt",
			"https://bkt.s3.eu-west-1.amazonaws.com/c1/.well-known/openid-configuration"},
		{"custom domain, region flag", doctorOptions{issuerURL: "https://oidc.example.com/clusters/p", s3Region: "us-west-2"}, "s3://bkt/pre",
			"https://bkt.s3.us-west-2.amazonaws.com/pre/clusters/p/.well-known/openid-configuration"},
		{"S3-compatible endpoint, path style", doctorOptions{issuerURL: "https://oidc.example.com/p", s3Endpoint: "http://127.0.0.1:9000", s3PathStyle: true}, "s3://bkt",
			"http://127.0.0.1:9000/bkt/p/.well-known/openid-configuration"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.o.mirror(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			if m.DiscoveryURL != tc.wantDisco {
				t.Errorf("discovery at %s, want %s", m.DiscoveryURL, tc.wantDisco)
			}
			if want := strings.Replace(tc.wantDisco, ".well-known/openid-configuration", "openid/v1/jwks", 1); m.JWKSURL != want {
				t.Errorf("JWKS at %s, want %s", m.JWKSURL, want)
			}
		})
	}
}
