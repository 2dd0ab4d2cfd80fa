package server

// The regression tests of issue 13 that run against the server package as it was before it (only
// ServeListener and the test helpers of that time): each failed there.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// client is one raw keep-alive HTTP/1.1 connection.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, conn: c, r: bufio.NewReader(c)}
}

// get makes one request and returns the response's status, or an error when the connection
// was closed instead.
func (c *client) get(path string) (int, error) {
	_ = c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.conn.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(c.conn, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path); err != nil {
		return 0, err
	}
	res, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, err
}

func (c *client) mustGet(path string) {
	c.t.Helper()
	if code, err := c.get(path); err != nil || code != http.StatusOK {
		c.t.Fatalf("GET %s: %d, %v", path, code, err)
	}
}

// closedWithin waits up to d for the server to close the connection and returns how long that
// took, or false if the connection is still open after d. Whatever the server sends is ignored.
func (c *client) closedWithin(d time.Duration) (time.Duration, bool) {
	begin := time.Now()
	_ = c.conn.SetReadDeadline(begin.Add(d))
	_, err := io.Copy(io.Discard, c.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return 0, false
	}
	return time.Since(begin), true
}

// trickle writes b one byte at a time, every interval, until the connection fails or stop.
func (c *client) trickle(b string, interval time.Duration, stop <-chan struct{}) {
	for i := 0; ; i = (i + 1) % len(b) {
		if _, err := c.conn.Write([]byte{b[i]}); err != nil {
			return
		}
		select {
		case <-stop:
			return
		case <-time.After(interval):
		}
	}
}

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
}

// failingListener fails its first Accept calls with err, as a process out of file descriptors does.
type failingListener struct {
	net.Listener
	failures atomic.Int32
	err      error
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, l.err
	}
	return l.Listener.Accept()
}

// recordingHandler keeps every log record, for tests that check what was logged.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) find(level slog.Level, substr string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.records {
		text := r.Message
		r.Attrs(func(a slog.Attr) bool { text += " " + a.String(); return true })
		if r.Level == level && strings.Contains(text, substr) {
			return true
		}
	}
	return false
}

// TestAcceptErrorsAreWarnings: running out of file descriptors is logged at warn (net/http
// logs it at its ErrorLog's level, which is debug), and serving carries on once it passes.
func TestAcceptErrorsAreWarnings(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	l := &failingListener{Listener: inner, err: emfile}
	l.failures.Store(3)
	rec := &recordingHandler{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, l, okHandler(), nil, slog.New(rec)) }()
	defer func() {
		cancel()
		<-done
	}()
	c := &http.Client{Timeout: 10 * time.Second}
	res, err := c.Get("http://" + inner.Addr().String() + "/")
	if err != nil {
		t.Fatalf("not served after the accept errors: %v", err)
	}
	res.Body.Close()
	if !rec.find(slog.LevelWarn, "too many open files") {
		t.Error("no warning naming the accept error (too many open files)")
	}
}

// deadlineCountingListener counts the connection deadlines set in the future: each one is a
// runtime timer armed or moved.
type deadlineCountingListener struct {
	net.Listener
	armed atomic.Int64
}

func (l *deadlineCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &deadlineCountingConn{Conn: c, armed: &l.armed}, nil
}

type deadlineCountingConn struct {
	net.Conn
	armed *atomic.Int64
}

func (c *deadlineCountingConn) count(t time.Time) {
	if t.After(time.Now()) {
		c.armed.Add(1)
	}
}

func (c *deadlineCountingConn) SetDeadline(t time.Time) error {
	c.count(t)
	return c.Conn.SetDeadline(t)
}

func (c *deadlineCountingConn) SetReadDeadline(t time.Time) error {
	c.count(t)
	return c.Conn.SetReadDeadline(t)
}

func (c *deadlineCountingConn) SetWriteDeadline(t time.Time) error {
	c.count(t)
	return c.Conn.SetWriteDeadline(t)
}

// TestNoDeadlinesPerRequest: keep-alive requests arm no connection deadline. With http.Server's
// timeouts each request armed four or five, which cost the JWKS several percent of throughput.
func TestNoDeadlinesPerRequest(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &deadlineCountingListener{Listener: inner}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, l, okHandler(), nil, testLogger(t)) }()
	defer func() {
		cancel()
		<-done
	}()
	c := dial(t, inner.Addr().String())
	c.mustGet("/") // the connection's set-up is not what is measured
	before := l.armed.Load()
	const requests = 100
	for range requests {
		c.mustGet("/")
	}
	if armed := l.armed.Load() - before; armed > 0 {
		t.Errorf("%d requests armed %d connection deadlines (%.1f per request), want none", requests, armed, float64(armed)/requests)
	}
}
