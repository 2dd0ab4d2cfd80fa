package kubesource

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// TestSecretWatcherStopsAgainstSilentServer: an API server address that accepts connections and
// never answers (a hung apiserver, a black-holing load balancer, a port taken by something else)
// must not keep Run from returning once its context ends.
func TestSecretWatcherStopsAgainstSilentServer(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read from nor written to
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	for _, scheme := range []string{"https", "http"} {
		t.Run(scheme, func(t *testing.T) {
			client, err := kubernetes.NewForConfig(&rest.Config{Host: scheme + "://" + lis.Addr().String(), TLSClientConfig: rest.TLSClientConfig{Insecure: scheme == "https"}})
			if err != nil {
				t.Fatal(err)
			}
			w := &SecretWatcher[int]{Client: client.CoreV1(), Namespace: "ns", Name: "s", Kind: "secret",
				Parse: func(*corev1.Secret) int { return 0 }}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx, func(SecretSnapshot[int]) {}) }()
			time.Sleep(1500 * time.Millisecond) // the first list is under way and hangs
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return within 5s of its context ending")
			}
		})
	}
}
