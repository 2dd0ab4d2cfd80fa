package testcluster

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoBackend accepts connections on 127.0.0.1, reads each one to EOF (the client's half-close),
// answers "NAME:" followed by what it read, and closes.
type echoBackend struct {
	ln net.Listener
	wg sync.WaitGroup
}

func startEchoBackend(t *testing.T, name string) *echoBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoBackend{ln: ln}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				got, err := io.ReadAll(conn)
				if err != nil {
					return
				}
				_, _ = fmt.Fprintf(conn, "%s:%s", name, got)
			}()
		}
	}()
	t.Cleanup(e.stop)
	return e
}

func (e *echoBackend) addr() string { return e.ln.Addr().String() }

// stop closes the listener and waits for every connection handler.
func (e *echoBackend) stop() {
	_ = e.ln.Close()
	e.wg.Wait()
}

// exchange sends msg through addr, half-closes, and returns the whole answer.
func exchange(t *testing.T, addr, msg string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dialing balancer: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, msg); err != nil {
		t.Fatalf("writing through balancer: %v", err)
	}
	// The answer only comes after the backend saw EOF: this checks that the half-close is passed
	// on and the way back stays open.
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatalf("half-closing: %v", err)
	}
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reading through balancer: %v", err)
	}
	return string(got)
}

func TestBalancerRoundRobinHalfCloseAndClose(t *testing.T) {
	a, b := startEchoBackend(t, "a"), startEchoBackend(t, "b")
	baseline := runtime.NumGoroutine()

	bal, err := StartBalancer(a.addr(), b.addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bal.Close() })
	if !strings.HasPrefix(bal.Addr(), "127.0.0.1:") || bal.URL() != "https://"+bal.Addr() {
		t.Fatalf("Addr() = %q, URL() = %q", bal.Addr(), bal.URL())
	}

	for i := range 6 {
		msg := fmt.Sprintf("request %d", i)
		want := []string{"a", "b"}[i%2] + ":" + msg
		if got := exchange(t, bal.Addr(), msg); got != want {
			t.Fatalf("connection %d: got %q, want %q", i, got, want)
		}
	}
	if got := bal.Connections(); !slices.Equal(got, []int{3, 3}) {
		t.Fatalf("Connections() = %v, want [3 3]", got)
	}

	// A connection still open when the balancer closes is closed too.
	live, err := net.DialTimeout("tcp", bal.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if _, err := io.WriteString(live, "never finished"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the live connection to reach a backend", func() bool { return slices.Equal(bal.Connections(), []int{4, 3}) })

	began := time.Now()
	if err := bal.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("Close with one live connection took %v", time.Since(began).Round(time.Microsecond))
	_ = live.SetReadDeadline(time.Now().Add(5 * time.Second))
	var netErr net.Error
	if n, err := live.Read(make([]byte, 64)); err == nil || errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("read on a connection the balancer closed: n=%d err=%v, want EOF or reset", n, err)
	}
	if _, err := net.DialTimeout("tcp", bal.Addr(), time.Second); err == nil {
		t.Fatal("balancer still accepts after Close")
	}
	if err := bal.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// Close waited for the balancer's goroutines; the backends' handlers end once they see EOF.
	waitFor(t, "goroutines to return to the baseline", func() bool { return runtime.NumGoroutine() <= baseline })
}

func TestBalancerDeadBackendAndBadInput(t *testing.T) {
	if _, err := StartBalancer(); err == nil {
		t.Error("StartBalancer without backends succeeded")
	}
	if _, err := StartBalancer("127.0.0.1"); err == nil {
		t.Error("StartBalancer with a backend lacking a port succeeded")
	}

	// A backend that refuses connections: the client's connection is closed, nothing hangs.
	dead := startEchoBackend(t, "dead")
	dead.stop()
	bal, err := StartBalancer(dead.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer bal.Close()
	conn, err := net.DialTimeout("tcp", bal.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read through a balancer whose backend is down: %v, want EOF", err)
	}
	if got := bal.Connections(); !slices.Equal(got, []int{1}) {
		t.Fatalf("Connections() = %v, want [1]", got)
	}
}

// waitFor polls cond for up to 5 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
