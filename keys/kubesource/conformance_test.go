package kubesource_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys/kubesource"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys/sourcetest"
)

// TestConformance runs the keys.Source conformance suite against a real kube-apiserver (one for
// the whole suite; each harness has a Secret of its own), with the Cluster API layout: tls.crt the
// public key bundle, tls.key the private signing key. The source reads as the issuer's service
// account, which may read its own Secret only.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver; skipped with -short")
	}
	cluster := startAPIServer(t)
	admin := cluster.RESTConfig()
	admin.QPS, admin.Burst = 1000, 1000
	adminCore, err := corev1client.NewForConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adminCore.Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	secrets := adminCore.Secrets(testNamespace)
	var n atomic.Int32
	sourcetest.Run(t, func(t *testing.T) sourcetest.Harness {
		name := fmt.Sprintf("conformance-%d-sa", n.Add(1))
		// put creates the Secret with data, or replaces its data: one write either way.
		put := func(ctx context.Context, data map[string][]byte) error {
			s, err := secrets.Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace, Name: name}, Type: corev1.SecretTypeOpaque, Data: data}
				_, err = secrets.Create(ctx, s, metav1.CreateOptions{})
				return err
			}
			if err != nil {
				return err
			}
			s.Data = data
			_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
			return err
		}
		return sourcetest.Harness{
			Source: kubesource.New(issuerClient(t, admin, name), testNamespace, name, testLogger(t)),
			SetKeys: func(ctx context.Context, ks ...sourcetest.Key) error {
				return put(ctx, capiData(ks))
			},
			Corrupt: func(ctx context.Context, c sourcetest.Corruption, ks ...sourcetest.Key) error {
				data := capiData(ks)
				switch c {
				case sourcetest.Truncated:
					// Cut in the middle of the last key: the private key, when there is one.
					if k, ok := data["tls.key"]; ok {
						data["tls.key"] = sourcetest.TruncatePEM(k)
					} else if len(ks) > 0 {
						data["tls.crt"] = append(sourcetest.PEM(ks[:len(ks)-1]...), sourcetest.TruncatePEM(ks[len(ks)-1].PEM())...)
					}
				case sourcetest.Unsupported:
					data["tls.crt"] = append(data["tls.crt"], sourcetest.UnsupportedKeyPEM()...)
				default:
					data = map[string][]byte{"tls.crt": sourcetest.GarbageBytes}
				}
				return put(ctx, data)
			},
			Remove: func(ctx context.Context) error { return secrets.Delete(ctx, name, metav1.DeleteOptions{}) },
			Phase: func(private bool) keys.Phase {
				if private {
					return keys.PhaseActive
				}
				return keys.PhasePublished
			},
		}
	})
}

// capiData is a Cluster API signing-key Secret's data holding ks: every public key in tls.crt, the
// private key (if one is asked for) in tls.key.
func capiData(ks []sourcetest.Key) map[string][]byte {
	data := map[string][]byte{}
	for _, k := range ks {
		data["tls.crt"] = append(data["tls.crt"], k.PublicPEM()...)
		if k.Private {
			data["tls.key"] = k.PrivatePEM()
		}
	}
	return data
}
