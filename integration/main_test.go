// Package integration proves kube-oidc-issuer end to end against a real kube-apiserver and etcd
// (built from the Go module proxy by hack/build-test-binaries.sh): tokens minted by the apiserver's
// TokenRequest API are verified with go-oidc through the issuer's live discovery document, over TLS
// with a CA the test generates, and the issuer's keys are compared with the apiserver's own JWKS.
package integration

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
)

// env is what every test shares: built once in TestMain.
type env struct {
	binDir    string // kube-apiserver, etcd
	issuerBin string
}

var shared env

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	tmp, err := os.MkdirTemp("", "koi-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)

	start := time.Now()
	binDir, err := testcluster.BinDir(ctx, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: building kube-apiserver and etcd:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "integration: kube-apiserver and etcd ready in %s\n", time.Since(start).Round(time.Millisecond))

	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	start = time.Now()
	bin, err := harness.BuildIssuer(ctx, root, tmp, raceEnabled)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "integration: kube-oidc-issuer built in %s (race=%v)\n", time.Since(start).Round(time.Millisecond), raceEnabled)
	shared = env{binDir: binDir, issuerBin: bin}
	return m.Run()
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil && filepath.Base(dir) != "integration" {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

func skipIfShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs a real kube-apiserver (run without -short)")
	}
}
