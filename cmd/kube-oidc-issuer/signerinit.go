package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/boundedread"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/signerstate"
)

type signerInitOptions struct {
	stateCache string
	importKey  string
	algorithm  string
}

func newSignerInitCommand() *cobra.Command {
	o := signerInitOptions{}
	cmd := &cobra.Command{
		Use:   "init --state-cache FILE (--import-key PEM | --algorithm RS256|ES256)",
		Short: "Create the first signer-mode key state in a cache file",
		Long: `Create a signer-mode key lifecycle state with one active key and write it to --state-cache (mode
0600). The signer started with that cache writes it into its --state-secret once the API server
answers.

--import-key migrates a cluster that signs with a key file today (kubeadm's sa.key, Cluster API's
tls.key): the key keeps its kid, so every token it already signed stays valid. --algorithm generates
a new key, for a fresh cluster. The cache is never overwritten: a second init would start another
lineage, which the signers refuse to mix with the first.`,
		Example: `  kube-oidc-issuer signer init --state-cache /var/lib/kube-oidc-issuer/state.json --import-key /etc/kubernetes/pki/sa.key
  kube-oidc-issuer signer init --state-cache state.json --algorithm ES256`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := runSignerInit(o, time.Now())
			if err != nil {
				return err
			}
			active, _ := st.Active()
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "state %s (generation %d) written to %s\nactive key %s (%s)\nnext: start `kube-oidc-issuer signer --state-cache %s --state-secret NAMESPACE/NAME --socket PATH` on every control-plane node, then kube-apiserver with --service-account-signing-endpoint=PATH\n",
				st.ID, st.Generation, o.stateCache, active.KID, active.Algorithm, o.stateCache)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.stateCache, "state-cache", "", "cache file to create (its directory must exist)")
	f.StringVar(&o.importKey, "import-key", "", "PEM private key to sign with from now on (RSA or ECDSA; PKCS #1, SEC 1 or PKCS #8)")
	f.StringVar(&o.algorithm, "algorithm", "", "generate a new key instead: RS256 (RSA 2048) or ES256 (P-256)")
	return cmd
}

func runSignerInit(o signerInitOptions, now time.Time) (*lifecycle.State, error) {
	if o.stateCache == "" {
		return nil, errors.New("--state-cache is required")
	}
	if (o.importKey == "") == (o.algorithm == "") {
		return nil, errors.New("give exactly one of --import-key PEM and --algorithm RS256|ES256")
	}
	if _, err := os.Lstat(o.stateCache); err == nil {
		return nil, fmt.Errorf("--state-cache %s already exists: refusing to overwrite it (a second init starts another lineage; the signers would refuse to mix them). Remove it only if no signer or state Secret uses it", o.stateCache)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("--state-cache %s: %w", o.stateCache, err)
	}
	if fi, err := os.Stat(filepath.Dir(o.stateCache)); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("--state-cache %s: directory %s does not exist", o.stateCache, filepath.Dir(o.stateCache))
	}
	var pemKey []byte
	if o.importKey != "" {
		b, err := boundedread.ReadFile(o.importKey, keys.MaxFileSize)
		if err != nil {
			return nil, fmt.Errorf("--import-key: %w", err)
		}
		pemKey = b
	}
	st, err := lifecycle.NewSignerState(pemKey, o.algorithm, now)
	if err != nil {
		if o.importKey != "" {
			return nil, fmt.Errorf("--import-key %s: %w", o.importKey, err)
		}
		return nil, fmt.Errorf("--algorithm %s: %w", o.algorithm, err)
	}
	if err := signerstate.WriteCache(o.stateCache, st); err != nil {
		return nil, err
	}
	return st, nil
}
