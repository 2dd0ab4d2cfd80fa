package deploytest

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
)

// cluster is the real etcd + kube-apiserver every apply test shares (nil with -short).
var (
	cluster  *testcluster.Cluster
	repoRoot string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	flag.Parse()
	root, err := testcluster.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy tests:", err)
		return 1
	}
	repoRoot = root
	if testing.Short() {
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	binDir, err := testcluster.BinDir(ctx, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy tests: kube-apiserver and etcd:", err)
		return 1
	}
	work, err := os.MkdirTemp("", "koi-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(work)
	signing, _, err := pki.GenerateRSAKeyPEM(2048)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	start := time.Now()
	c, err := testcluster.Start(ctx, testcluster.Config{
		BinDir:                binDir,
		WorkDir:               filepath.Join(work, "cluster"),
		ServiceAccountIssuers: []string{"https://oidc.example.com/clusters/prod-1"},
		SigningKeyPEM:         signing,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy tests: starting kube-apiserver:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "deploy tests: kube-apiserver up in %s\n", time.Since(start).Round(time.Millisecond))
	cluster = c
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "deploy tests: stopping the cluster:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

func needCluster(t *testing.T) {
	t.Helper()
	if cluster == nil {
		t.Skip("needs kube-apiserver (not with -short)")
	}
}
