package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigurationDocUpToDate fails when docs/configuration.md differs from what the command
// tree generates: a flag was added, renamed or re-described without regenerating the docs.
func TestConfigurationDocUpToDate(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "configuration.md")
	committed, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v (regenerate it with `make docs`)", path, err)
	}
	generated := configurationMarkdown()
	if bytes.Equal(committed, generated) {
		return
	}
	cl, gl := strings.Split(string(committed), "\n"), strings.Split(string(generated), "\n")
	for i := 0; i < len(cl) || i < len(gl); i++ {
		var c, g string
		if i < len(cl) {
			c = cl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if c != g {
			t.Fatalf("docs/configuration.md is out of date with the flags: regenerate it with `make docs` "+
				"(go run ./cmd/kube-oidc-issuer gen-docs > docs/configuration.md) and commit it.\nfirst difference at line %d:\ncommitted: %s\ngenerated: %s", i+1, c, g)
		}
	}
}

// TestConfigurationDocCoversEveryFlag: every flag of every command appears with its variable.
func TestConfigurationDocCoversEveryFlag(t *testing.T) {
	doc := string(configurationMarkdown())
	root := newRootCommand(nil, nil)
	for _, want := range []string{"## kube-oidc-issuer serve", "## kube-oidc-issuer doctor", "## kube-oidc-issuer keys stage",
		"`--issuer-url` | `KUBE_OIDC_ISSUER_ISSUER_URL`", "`--aws` | `KUBE_OIDC_ISSUER_AWS`"} {
		if !strings.Contains(doc, want) {
			t.Errorf("generated reference lacks %q", want)
		}
	}
	if strings.Contains(doc, "gen-docs |") || strings.Contains(doc, "## kube-oidc-issuer gen-docs") {
		t.Error("the hidden gen-docs command is documented")
	}
	if root.Commands() == nil {
		t.Fatal("no commands")
	}
}
