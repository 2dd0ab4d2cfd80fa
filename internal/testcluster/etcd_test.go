package testcluster

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
)

// TestStopStartEtcd: with etcd stopped, kube-apiserver stays up but is not ready and cannot write;
// StartEtcd brings etcd back on the same ports and data, kube-apiserver reconnects by itself, and
// what was written before the outage is still there.
func TestStopStartEtcd(t *testing.T) {
	bins := binDir(t)
	ctx := t.Context()
	priv, _, err := pki.GenerateRSAKeyPEM(2048)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Start(ctx, Config{
		BinDir:                bins,
		WorkDir:               t.TempDir(),
		ServiceAccountIssuers: []string{testIssuer},
		SigningKeyPEM:         priv,
		Logger:                testLogger(t),
	})
	if err != nil {
		t.Fatalf("starting cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping cluster: %v", err)
		}
	})
	cs, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	cm := func(name string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"k": "v"}}
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm("before"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	etcdPID, apiPID := c.pids()
	etcdURL := c.EtcdURL()

	if err := c.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, "etcd", etcdPID)
	if err := c.StopEtcd(); err == nil {
		t.Fatal("a second StopEtcd succeeded")
	}
	down := time.Now()
	for c.APIServerReady(ctx) == nil {
		if time.Since(down) > 30*time.Second {
			t.Fatal("kube-apiserver still ready 30s after etcd stopped")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("kube-apiserver unready %s after etcd stopped", time.Since(down).Round(time.Millisecond))
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = cs.CoreV1().ConfigMaps("default").Create(short, cm("during"), metav1.CreateOptions{})
	cancel()
	if err == nil {
		t.Fatal("a write succeeded without etcd")
	}

	if err := c.StartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.StartEtcd(ctx); err == nil {
		t.Fatal("StartEtcd of a running etcd succeeded")
	}
	if c.EtcdURL() != etcdURL {
		t.Fatalf("etcd came back at %s, was %s", c.EtcdURL(), etcdURL)
	}
	if _, apiNow := c.pids(); apiNow != apiPID {
		t.Fatalf("kube-apiserver was restarted (pid %d → %d); it must reconnect by itself", apiPID, apiNow)
	}
	up := time.Now()
	for {
		err := c.APIServerReady(ctx)
		if err == nil {
			break
		}
		if time.Since(up) > 60*time.Second {
			t.Fatalf("kube-apiserver not ready 60s after etcd came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("kube-apiserver ready again %s after etcd answered", time.Since(up).Round(time.Millisecond))
	if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "before", metav1.GetOptions{}); err != nil {
		t.Fatalf("object written before the outage: %v", err)
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm("after"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("write after the outage: %v", err)
	}
}
