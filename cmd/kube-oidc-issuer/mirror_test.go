package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMirrorCommandWebRoot: one publish into a web root at the issuer URL's path, then a second
// run that finds nothing to change; --dry-run writes nothing.
func TestMirrorCommandWebRoot(t *testing.T) {
	root := t.TempDir()
	args := []string{"mirror", "--issuer-url", "https://oidc.example.com/cluster-a", "--mirror", "file://" + root, "--key-file", rsaTestKey}
	jwksFile := filepath.Join(root, "cluster-a", "openid", "v1", "jwks")
	discoveryFile := filepath.Join(root, "cluster-a", ".well-known", "openid-configuration")

	out, stderr, err := run(t, "", append(args, "--dry-run")...)
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, stderr)
	}
	for _, want := range []string{"would write " + jwksFile, "would write " + discoveryFile, "Content-Type: application/jwk-set+json", rsaKID, `"issuer":"https://oidc.example.com/cluster-a"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("dry-run output lacks %q:\n%s", want, out)
		}
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("--dry-run wrote %v", entries)
	}

	out, stderr, err = run(t, "", args...)
	if err != nil {
		t.Fatalf("mirror: %v\n%s", err, stderr)
	}
	if !strings.Contains(out, "wrote     "+jwksFile+"\nwrote     "+discoveryFile+"\n") {
		t.Fatalf("want JWKS then discovery written, got:\n%s", out)
	}
	jwks, err := os.ReadFile(jwksFile)
	if err != nil || !strings.Contains(string(jwks), rsaKID) {
		t.Fatalf("mirrored JWKS %q (%v)", jwks, err)
	}
	jwksOut, _, err := run(t, "", "jwks", "--public-key", rsaTestKey)
	if err != nil || jwksOut != string(jwks)+"\n" {
		t.Fatalf("mirrored JWKS differs from `jwks`:\n%s\n%s", jwks, jwksOut)
	}

	out, _, err = run(t, "", args...)
	if err != nil || strings.Contains(out, "wrote") || strings.Count(out, "unchanged ") != 2 {
		t.Fatalf("second run: %v\n%s", err, out)
	}
}

func TestMirrorRefusesBadConfiguration(t *testing.T) {
	root := t.TempDir()
	base := []string{"--key-file", rsaTestKey}
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no target", []string{"--issuer-url", "https://oidc.example.com"}, "no --mirror target"},
		{"unknown scheme", []string{"--issuer-url", "https://oidc.example.com", "--mirror", "gs://bucket"}, "use s3://"},
		{"bucket differs from the issuer URL", []string{"--issuer-url", "https://s3.eu-west-1.amazonaws.com/my-bucket", "--mirror", "s3://other-bucket"}, `served from bucket "my-bucket"`},
		{"dotted bucket, virtual-hosted", []string{"--issuer-url", "https://oidc.example.com.s3.eu-west-1.amazonaws.com", "--mirror", "s3://oidc.example.com"}, "contains dots"},
		{"same target twice", []string{"--issuer-url", "https://oidc.example.com", "--mirror", "file://" + root, "--mirror", "file://" + root + "/"}, "given twice"},
		{"no key source", []string{"--issuer-url", "https://oidc.example.com", "--mirror", "file://" + root, "--key-file", ""}, "no key source"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"mirror"}, tc.args...)
			if tc.name != "no key source" {
				args = append(args, base...)
			}
			_, _, err := run(t, "", args...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
	_, _, err := run(t, "", "serve", "--issuer-url", "https://oidc.example.com", "--key-file", rsaTestKey, "--mirror", "file://"+root, "--mirror-interval", "0s")
	if err == nil || !strings.Contains(err.Error(), "--mirror-interval") {
		t.Fatalf("serve with --mirror-interval 0: %v", err)
	}
}
