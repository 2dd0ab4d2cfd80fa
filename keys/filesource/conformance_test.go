package filesource_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys/filesource"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys/sourcetest"
)

// TestConformance runs the keys.Source conformance suite over a key file in its own directory,
// written the way kubelet updates a mounted Secret and editors save: a new file renamed over the
// old one.
func TestConformance(t *testing.T) {
	sourcetest.Run(t, func(t *testing.T) sourcetest.Harness {
		dir := t.TempDir()
		path := filepath.Join(dir, "sa.pub")
		write := func(data []byte) error {
			tmp, err := os.CreateTemp(dir, ".sa.pub-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			if _, err := tmp.Write(data); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			return os.Rename(tmp.Name(), path)
		}
		return sourcetest.Harness{
			Source: filesource.New(path, nil),
			SetKeys: func(_ context.Context, ks ...sourcetest.Key) error {
				return write(sourcetest.PEM(ks...))
			},
			Corrupt: func(_ context.Context, c sourcetest.Corruption, ks ...sourcetest.Key) error {
				switch c {
				case sourcetest.Truncated:
					if len(ks) > 0 {
						last := len(ks) - 1
						return write(append(sourcetest.PEM(ks[:last]...), sourcetest.TruncatePEM(ks[last].PEM())...))
					}
				case sourcetest.Unsupported:
					return write(append(sourcetest.PEM(ks...), sourcetest.UnsupportedKeyPEM()...))
				}
				return write(sourcetest.GarbageBytes)
			},
			Remove: func(context.Context) error { return os.Remove(path) },
			// A private-key block signs tokens: kubeadm's sa.key.
			Phase: func(private bool) keys.Phase {
				if private {
					return keys.PhaseActive
				}
				return keys.PhasePublished
			},
		}
	})
}
