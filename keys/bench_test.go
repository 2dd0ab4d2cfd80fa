package keys_test

import (
	"testing"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// BenchmarkRenderJWKS renders a typical rotation set: 3 RSA 2048 keys.
func BenchmarkRenderJWKS(b *testing.B) {
	s := keys.NewSet(
		active(mustPublicKey(b, &rsa2048A().PublicKey)),
		published(mustPublicKey(b, &rsa2048B().PublicKey)),
		published(testdataKey(b, "rsa2048.pub.pem")),
	)
	body, err := keys.RenderJWKS(s, keys.JWKSOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := keys.RenderJWKS(s, keys.JWKSOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParsePEM parses a kubeadm-style sa.pub with one RSA key.
func BenchmarkParsePEM(b *testing.B) {
	data := readTestdata(b, "rsa2048.pub.pem")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := keys.ParsePEM("sa.pub", data); err != nil {
			b.Fatal(err)
		}
	}
}
