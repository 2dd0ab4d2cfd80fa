package signer

import (
	"log/slog"
	"testing"

	externaljwtv1 "k8s.io/externaljwt/apis/v1"
)

// BenchmarkSignOverSocket measures one Sign through a real gRPC client over the unix socket, one
// caller and (with -cpu or GOMAXPROCS) parallel callers.
func BenchmarkSignOverSocket(b *testing.B) {
	for _, kind := range []string{"rsa2048", "p256"} {
		b.Run(kind, func(b *testing.B) {
			ks, err := NewStaticKeySet(newKey(b, kind))
			if err != nil {
				b.Fatal(err)
			}
			// No per-token debug lines: they would measure the test log.
			client, _ := serveOverSocket(b, Config{Keys: ks, Logger: slog.New(slog.DiscardHandler)})
			_, claims := testClaims(b)
			req := &externaljwtv1.SignJWTRequest{Claims: claims}
			b.Run("serial", func(b *testing.B) {
				for b.Loop() {
					if _, err := client.Sign(b.Context(), req); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.SetParallelism(25) // 50 callers on 2 CPUs
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := client.Sign(b.Context(), req); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}

// BenchmarkSignJWS is the signing alone, without gRPC.
func BenchmarkSignJWS(b *testing.B) {
	for _, kind := range []string{"rsa2048", "p256"} {
		b.Run(kind, func(b *testing.B) {
			k, err := NewSigningKey(newKey(b, kind))
			if err != nil {
				b.Fatal(err)
			}
			_, claims := testClaims(b)
			for b.Loop() {
				if _, err := signJWS(k, "eyJhbGciOiJSUzI1NiJ9."+claims); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
