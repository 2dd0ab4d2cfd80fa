package leader

import (
	"context"
	"crypto/elliptic"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/testcluster"
)

func waitUntil(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// run starts e until the returned stop is called; stop waits for Run to return.
func run(t *testing.T, e *Elector) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestWithoutElectionAlwaysLeads(t *testing.T) {
	e, err := New(Config{Logger: slog.New(slog.DiscardHandler), Identity: "solo"})
	if err != nil {
		t.Fatal(err)
	}
	var running, stopped atomic.Int32
	var attempts atomic.Int32
	e.Go("steady", func(ctx context.Context) error {
		running.Add(1)
		<-ctx.Done()
		stopped.Add(1)
		return nil
	})
	e.Go("flaky", func(ctx context.Context) error {
		if attempts.Add(1) < 2 {
			return errors.New("transient")
		}
		<-ctx.Done()
		return nil
	})
	stop := run(t, e)
	waitUntil(t, "task started", 5*time.Second, func() bool { return running.Load() == 1 && e.IsLeader() })
	waitUntil(t, "failed task restarted", 5*time.Second, func() bool { return attempts.Load() == 2 })
	if st := e.Status(); st.Enabled || !st.Leader || st.Identity != "solo" || st.Holder != "solo" || st.Terms != 1 {
		t.Errorf("status %+v", st)
	}
	stop()
	if stopped.Load() != 1 || e.IsLeader() {
		t.Errorf("after stop: stopped %d, leader %v", stopped.Load(), e.IsLeader())
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Go after Run did not panic")
			}
		}()
		e.Go("late", func(context.Context) error { return nil })
	}()
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no client", Config{Enabled: true, Namespace: "ns", Name: "l"}, "no Kubernetes client"},
		{"no name", Config{Enabled: true, Client: &coordinationv1client.CoordinationV1Client{}, Namespace: "ns"}, "namespace and a name"},
		{"lease not longer than renew", Config{Enabled: true, Client: &coordinationv1client.CoordinationV1Client{}, Namespace: "ns", Name: "l", LeaseDuration: time.Second, RenewDeadline: time.Second}, "longer than the renew deadline"},
		{"renew too short for retries", Config{Enabled: true, Client: &coordinationv1client.CoordinationV1Client{}, Namespace: "ns", Name: "l", LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 2 * time.Second}, "retry period"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestElectionHandsOver: two electors on one Lease of a real kube-apiserver. Exactly one runs the
// task; when it stops (releasing the Lease) the other takes over.
func TestElectionHandsOver(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a real kube-apiserver (run without -short)")
	}
	ctx := t.Context()
	bin, err := testcluster.BinDir(ctx, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	signing, _, err := pki.GenerateECDSAKeyPEM(elliptic.P256())
	if err != nil {
		t.Fatal(err)
	}
	cluster, err := testcluster.Start(ctx, testcluster.Config{BinDir: bin, WorkDir: filepath.Join(t.TempDir(), "cluster"),
		ServiceAccountIssuers: []string{"https://issuer.example"}, SigningKeyPEM: signing})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cluster.Stop(); err != nil {
			t.Error(err)
		}
	})
	core, err := corev1client.NewForConfig(cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := core.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "issuer"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	coord, err := coordinationv1client.NewForConfig(cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}

	var active atomic.Int32 // how many replicas run the task right now
	var overlap atomic.Bool
	electors := make([]*Elector, 2)
	stops := make([]func(), 2)
	for i := range electors {
		e, err := New(Config{Enabled: true, Client: coord, Namespace: "issuer", Name: "kube-oidc-issuer",
			Identity: fmt.Sprintf("replica-%d", i), LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		e.Go("work", func(ctx context.Context) error {
			if active.Add(1) > 1 {
				overlap.Store(true)
			}
			<-ctx.Done()
			active.Add(-1)
			return nil
		})
		electors[i] = e
		stops[i] = run(t, e)
	}
	waitUntil(t, "a leader", 20*time.Second, func() bool { return active.Load() == 1 })
	first := 0
	if electors[1].IsLeader() {
		first = 1
	}
	other := 1 - first
	if !electors[first].IsLeader() || electors[other].IsLeader() {
		t.Fatalf("leaders: %v %v", electors[0].IsLeader(), electors[1].IsLeader())
	}
	waitUntil(t, "the standby sees the leader", 10*time.Second, func() bool { return electors[other].Status().Holder == electors[first].Status().Identity })

	began := time.Now()
	stops[first]()
	took := waitUntil(t, "takeover", 20*time.Second, func() bool { return electors[other].IsLeader() && active.Load() == 1 })
	t.Logf("graceful handover (Lease released on shutdown): %s after the leader began stopping (%s in total)", took.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	if overlap.Load() {
		t.Fatal("the task ran on two replicas at once")
	}
	lease, err := coord.Leases("issuer").Get(ctx, "kube-oidc-issuer", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != electors[other].Status().Identity {
		t.Fatalf("Lease holder %v", lease.Spec.HolderIdentity)
	}
}

// TestTaskBackoff: a failed task is restarted after 1s, 2s, … up to 30s.
func TestTaskBackoff(t *testing.T) {
	b := taskBackoff()
	for i, want := range []time.Duration{1, 2, 4, 8, 16, 30, 30, 30} {
		if d := b.Step(); d != want*time.Second {
			t.Errorf("restart %d after %s, want %s", i+1, d, want*time.Second)
		}
	}
}
