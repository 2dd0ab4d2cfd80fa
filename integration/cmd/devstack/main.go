// Command devstack is `make run`: it brings up a real local stack — etcd, kube-apiserver signing
// service-account tokens with a freshly generated key, that key in a Cluster API style Secret — and
// runs `kube-oidc-issuer serve` against it over TLS with a generated CA. It prints the issuer URL,
// curl lines for both documents, and a token it minted and verified through the issuer, then keeps
// everything running until Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
)

const (
	// clusterAPISecretType is the type Cluster API gives <cluster>-sa.
	clusterAPISecretType corev1.SecretType = "cluster.x-k8s.io/secret"
	namespace            string            = "eksa-system"
	secret               string            = "local-sa"
	audience             string            = "sts.amazonaws.com"
)

func main() {
	port := flag.Int("port", 8443, "public (TLS) port of the issuer on 127.0.0.1")
	internalPort := flag.Int("internal-port", 8081, "internal port (/healthz, /readyz, /metrics) on 127.0.0.1")
	workDir := flag.String("work-dir", "", "where certificates, keys and logs go (default: a new temporary directory)")
	once := flag.Bool("once", false, "exit after printing (for scripted checks) instead of serving until Ctrl-C")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := run(ctx, logger, *port, *internalPort, *workDir, *once); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, logger *slog.Logger, port, internalPort int, workDir string, once bool) error {
	if workDir == "" {
		d, err := os.MkdirTemp("", "kube-oidc-issuer-devstack-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		workDir = d
	}
	root, err := os.Getwd()
	if err != nil {
		return err
	}

	fmt.Fprintln(os.Stderr, "==> kube-apiserver and etcd (built from the Go module proxy on first use; this can take ~4 minutes)")
	binDir, err := testcluster.BinDir(ctx, os.Stderr)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "==> building kube-oidc-issuer")
	issuerBin, err := harness.BuildIssuer(ctx, root, workDir, false)
	if err != nil {
		return err
	}

	issuerURL := fmt.Sprintf("https://127.0.0.1:%d", port)
	signingPriv, signingPub, err := pki.GenerateRSAKeyPEM(2048)
	if err != nil {
		return err
	}
	ca, err := pki.NewCA("kube-oidc-issuer devstack CA")
	if err != nil {
		return err
	}
	leaf, err := ca.IssueServer("127.0.0.1", "localhost")
	if err != nil {
		return err
	}
	certFile, keyFile, err := leaf.WriteFiles(workDir)
	if err != nil {
		return err
	}
	caFile := filepath.Join(workDir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o644); err != nil {
		return err
	}

	fmt.Fprintln(os.Stderr, "==> starting etcd and kube-apiserver on 127.0.0.1")
	cluster, err := testcluster.Start(ctx, testcluster.Config{
		BinDir:                binDir,
		WorkDir:               filepath.Join(workDir, "cluster"),
		ServiceAccountIssuers: []string{issuerURL},
		ServiceAccountJWKSURI: issuerURL + "/openid/v1/jwks",
		SigningKeyPEM:         signingPriv,
		Logger:                logger,
	})
	if err != nil {
		return err
	}
	defer cluster.Stop()

	kube, err := kubernetes.NewForConfig(cluster.RESTConfig())
	if err != nil {
		return err
	}
	if err := seed(ctx, kube, signingPub, signingPriv); err != nil {
		return err
	}

	fmt.Fprintln(os.Stderr, "==> starting kube-oidc-issuer serve")
	issuer, err := harness.StartIssuer(ctx, harness.IssuerConfig{
		Binary: issuerBin,
		Args: []string{
			"--issuer-url", issuerURL,
			"--secret", namespace + "/" + secret,
			"--kubeconfig", cluster.KubeconfigPath(),
			"--tls-cert-file", certFile,
			"--tls-key-file", keyFile,
			// Outside a pod the probe has no ServiceAccount of its own: use the demo one, so
			// /readyz shows what the control plane signs with.
			"--signing-probe-service-account", namespace + "/demo",
		},
		PublicPort:   port,
		InternalPort: internalPort,
		LogPath:      filepath.Join(workDir, "issuer.log"),
	})
	if err != nil {
		return err
	}
	defer issuer.Stop()
	if err := issuer.WaitReady(ctx, 30*time.Second); err != nil {
		return err
	}

	tr, err := kube.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, "demo", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("minting a token: %w", err)
	}
	client, err := harness.HTTPClient(ca.CertPEM())
	if err != nil {
		return err
	}
	octx := oidc.ClientContext(ctx, client)
	provider, err := oidc.NewProvider(octx, issuerURL)
	if err != nil {
		return fmt.Errorf("discovery through the issuer: %w", err)
	}
	idt, err := provider.Verifier(&oidc.Config{ClientID: audience}).Verify(octx, tr.Status.Token)
	if err != nil {
		return fmt.Errorf("verifying the token through the issuer: %w", err)
	}

	tokenFile := filepath.Join(workDir, "token")
	if err := os.WriteFile(tokenFile, []byte(tr.Status.Token), 0o600); err != nil {
		return err
	}

	fmt.Printf(`
kube-oidc-issuer is serving a real local cluster's issuer.

  issuer URL      %[1]s
  discovery       curl --cacert %[2]s %[1]s/.well-known/openid-configuration
  JWKS            curl --cacert %[2]s %[1]s/openid/v1/jwks
  readiness       curl http://127.0.0.1:%[3]d/readyz
  metrics         curl http://127.0.0.1:%[3]d/metrics
  kubectl         kubectl --kubeconfig %[4]s -n %[5]s get secret %[6]s
  issuer log      %[7]s
  doctor          go run ./cmd/kube-oidc-issuer doctor --issuer-url %[1]s --ca-file %[2]s --token %[12]s

A token for system:serviceaccount:%[5]s:demo (aud %[8]s), verified through the issuer with go-oidc
(sub=%[9]s, expires %[10]s):

%[11]s

`, issuerURL, caFile, internalPort, cluster.KubeconfigPath(), namespace, secret,
		filepath.Join(workDir, "issuer.log"), audience, idt.Subject, idt.Expiry.Format(time.RFC3339), tr.Status.Token, tokenFile)

	if once {
		return nil
	}
	fmt.Println("Ctrl-C stops the issuer, kube-apiserver and etcd.")
	<-ctx.Done()
	return nil
}

// seed creates what a Cluster API / EKS Anywhere management cluster has: the namespace, the
// <cluster>-sa Secret (tls.crt = public key PEM, tls.key = private key) and a workload's
// ServiceAccount.
func seed(ctx context.Context, kube kubernetes.Interface, pub, priv []byte) error {
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating namespace: %w", err)
	}
	if _, err := kube.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secret},
		Type:       clusterAPISecretType,
		Data:       map[string][]byte{"tls.crt": pub, "tls.key": priv},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the signing-key Secret: %w", err)
	}
	if _, err := kube.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating service account: %w", err)
	}
	return nil
}
