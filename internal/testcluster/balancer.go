package testcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"
)

// balancerDialTimeout bounds the connection to a backend; a backend that does not answer in time
// gets the client's connection closed, as a load balancer without health checks would.
const balancerDialTimeout = 5 * time.Second

// Balancer is a round-robin TCP load balancer on 127.0.0.1 for tests: each new connection goes to
// the next backend in turn and is then relayed byte for byte, like a cloud network load balancer
// in front of several kube-apiservers. TLS passes through untouched, so clients verify the
// backends' certificate, and everything sent over one connection reaches one backend: which one a
// request lands on depends on how the client reuses connections. Its methods are safe for
// concurrent use.
type Balancer struct {
	ln       net.Listener
	backends []string
	ctx      context.Context // canceled by Close, aborting dials in progress
	cancel   context.CancelFunc
	wg       sync.WaitGroup // the accept loop and every relay

	mu       sync.Mutex // guards the fields below
	next     int
	counts   []int
	conns    map[net.Conn]struct{} // live client and backend connections, closed by Close
	closed   bool
	closeErr error
}

// StartBalancer listens on a free port of 127.0.0.1 and forwards each accepted connection to the
// next of backends (host:port) in turn. Close it when done.
func StartBalancer(backends ...string) (*Balancer, error) {
	if len(backends) == 0 {
		return nil, errors.New("starting balancer: no backend")
	}
	for _, b := range backends {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return nil, fmt.Errorf("starting balancer: backend %q is not host:port: %w", b, err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("starting balancer: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Balancer{
		ln:       ln,
		backends: slices.Clone(backends),
		ctx:      ctx,
		cancel:   cancel,
		counts:   make([]int, len(backends)),
		conns:    map[net.Conn]struct{}{},
	}
	b.wg.Add(1)
	go b.acceptLoop()
	return b, nil
}

// Addr is the balancer's address, 127.0.0.1:PORT.
func (b *Balancer) Addr() string { return b.ln.Addr().String() }

// URL is https://ADDR, the base URL of apiservers behind the balancer.
func (b *Balancer) URL() string { return "https://" + b.Addr() }

// Connections returns how many connections the balancer has handed to each backend so far, in
// the order of the backends given to StartBalancer. A connection counts once assigned, even if
// the backend then refuses it.
func (b *Balancer) Connections() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.counts)
}

// Close stops accepting, closes every live connection and waits until all of the balancer's
// goroutines have returned. It is idempotent and returns the first call's result.
func (b *Balancer) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.wg.Wait()
		return b.closeErr
	}
	b.closed = true
	live := make([]net.Conn, 0, len(b.conns))
	for c := range b.conns {
		live = append(live, c)
	}
	b.mu.Unlock()

	b.cancel()
	err := b.ln.Close()
	for _, c := range live {
		_ = c.Close()
	}
	b.wg.Wait()

	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		b.closeErr = fmt.Errorf("closing balancer listener: %w", err)
	}
	return b.closeErr
}

func (b *Balancer) acceptLoop() {
	defer b.wg.Done()
	for {
		client, err := b.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Anything else (out of file descriptors, an aborted handshake) is transient for a
			// listener; pause instead of spinning.
			select {
			case <-b.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			_ = client.Close()
			return
		}
		i := b.next
		b.next = (b.next + 1) % len(b.backends)
		b.counts[i]++
		b.conns[client] = struct{}{}
		// The accept loop still holds its own count, so the group cannot reach zero meanwhile:
		// Add never races with Close's Wait.
		b.wg.Add(1)
		b.mu.Unlock()
		go b.relay(client, b.backends[i])
	}
}

// relay connects client to backend and copies both ways until both directions have ended.
func (b *Balancer) relay(client net.Conn, backend string) {
	defer b.wg.Done()
	defer b.untrack(client)

	d := net.Dialer{Timeout: balancerDialTimeout}
	upstream, err := d.DialContext(b.ctx, "tcp", backend)
	if err != nil {
		return // closing the client's connection is all a client learns of a dead backend
	}
	defer b.untrack(upstream)
	if !b.track(upstream) {
		return
	}

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pipe(upstream, client) }()
	go func() { defer wg.Done(); pipe(client, upstream) }()
	wg.Wait()
}

// pipe copies src to dst. When src ends cleanly it passes the half-close on (a client that has
// sent its whole request may still be reading the answer); on an error it closes both
// connections, which also ends the copy in the other direction.
func pipe(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return
		}
	}
	_ = dst.Close()
	_ = src.Close()
}

// track records a live connection for Close; false (with the connection closed) if the balancer
// is already closed.
func (b *Balancer) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		_ = c.Close()
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

// untrack closes a connection whose relay has ended and forgets it.
func (b *Balancer) untrack(c net.Conn) {
	_ = c.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.conns, c)
}
