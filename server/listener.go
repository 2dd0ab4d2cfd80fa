package server

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ListenerConfig bounds what the clients of one listener can hold: connections, and the time a
// connection may spend in each phase. The bounds are enforced by a bounded listener (a net.Listener
// wrapper) and one sweeper goroutine per listener, not by net/http's per-request deadlines: with
// http.Server's timeouts set, every request re-arms about five connection deadlines (each a
// runtime timer update), which cost the JWKS several percent of its throughput. The sweeper checks
// every connection a few times a second instead, and a request only stamps its connection with
// the sweeper's epoch (a few atomic stores). A bound therefore holds to within one sweep interval
// (at most 250 ms) late, and never early.
type ListenerConfig struct {
	// Name labels the listener's metrics and log lines ("public", "internal").
	Name string
	// MaxConnections caps the open connections. At the cap a new connection is admitted by
	// closing the oldest idle ones, never one in the middle of a request (connections that sent
	// nothing yet come next, then requests stuck for over a second); when there is nothing to
	// close, the new connection is refused. Each connection holds memory (~12 KiB live plain,
	// ~18 KiB with TLS: a goroutine and net/http's and crypto/tls's buffers; under a flood 45 and
	// 75–100 KiB of resident memory with the GC's headroom and the handshakes' garbage), so the
	// cap is what keeps a flood of idle connections inside the pod's memory limit.
	MaxConnections int
	// ReadHeaderTimeout bounds a new connection's TLS handshake and first request headers,
	// counted from the accept, and the headers of each later request, counted from their first
	// byte (slowloris).
	ReadHeaderTimeout time.Duration
	// WriteTimeout bounds an HTTP/1 request from the end of its headers to the end of its
	// response, and each write on an HTTP/2 connection and each HTTP/2 stream's response (a
	// client that does not read).
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections that have been idle this long.
	IdleTimeout time.Duration
	// PressureIdleTimeout replaces IdleTimeout while more than 80 % of MaxConnections are open,
	// so that a flood of idle connections is shed early while polling relying parties keep theirs
	// in normal times.
	PressureIdleTimeout time.Duration
	// Metrics receives the listener's figures; nil leaves them unexported.
	Metrics *ListenerMetrics
}

// highWaterPercent of MaxConnections open switches the idle timeout to PressureIdleTimeout.
const highWaterPercent = 80

// DefaultPublicMaxConnections and DefaultPublicTLSMaxConnections fit the shipped pod (64 Mi memory
// limit, GOMEMLIMIT=48MiB) under a flood of idle connections, plain and TLS. Measured with
// `go test -run TestPublicListenerFlood -v ./integration` (5,000 idle keep-alive connections
// against the release binary watching a Secret): the process starts at ~32 MiB resident, ~25 MiB
// of it the mapped binary; 512 plain connections took it to ~55 MiB, 192 TLS ones to ~55 MiB (a
// TLS connection holds more buffers and its handshake makes far more garbage: 256 took it to
// ~59 MiB, 384 to ~67 MiB).
const (
	DefaultPublicMaxConnections    = 512
	DefaultPublicTLSMaxConnections = 192
)

// DefaultInternalMaxConnections is enough for kubelet's probes and a few Prometheus scrapers,
// and is a budget of its own: a flood of the public listener cannot take it.
const DefaultInternalMaxConnections = 64

// defaultMaxConnections bounds listeners started by Serve and ServeListener (the admin API).
const defaultMaxConnections = 128

// DefaultListenerConfig is what Serve and ServeListener use: every protection on, with the
// public listener's timeouts.
func DefaultListenerConfig() ListenerConfig {
	return ListenerConfig{
		MaxConnections:      defaultMaxConnections,
		ReadHeaderTimeout:   5 * time.Second,
		WriteTimeout:        10 * time.Second,
		IdleTimeout:         2 * time.Minute,
		PressureIdleTimeout: 5 * time.Second,
	}
}

// DefaultPublicListenerConfig is the public listener's (the documents') defaults.
func DefaultPublicListenerConfig() ListenerConfig {
	c := DefaultListenerConfig()
	c.Name = "public"
	c.MaxConnections = DefaultPublicMaxConnections
	return c
}

// DefaultInternalListenerConfig is the internal listener's (/healthz, /readyz, /metrics) defaults.
func DefaultInternalListenerConfig() ListenerConfig {
	c := DefaultListenerConfig()
	c.Name = "internal"
	c.MaxConnections = DefaultInternalMaxConnections
	return c
}

// Validate reports settings that would leave a listener unbounded or unable to serve.
func (c ListenerConfig) Validate() error {
	var errs []error
	if c.MaxConnections < 1 {
		errs = append(errs, fmt.Errorf("maximum connections %d: want at least 1", c.MaxConnections))
	}
	for _, d := range []struct {
		what string
		d    time.Duration
	}{
		{"read-header timeout", c.ReadHeaderTimeout},
		{"write timeout", c.WriteTimeout},
		{"idle timeout", c.IdleTimeout},
		{"idle timeout under pressure", c.PressureIdleTimeout},
	} {
		if d.d <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: want more than 0", d.what, d.d))
		}
	}
	if c.PressureIdleTimeout > c.IdleTimeout {
		errs = append(errs, fmt.Errorf("idle timeout under pressure %s: want at most the idle timeout %s", c.PressureIdleTimeout, c.IdleTimeout))
	}
	if c.Name != "" {
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("%s listener: %w", c.Name, err)
		}
	}
	return errors.Join(errs...)
}

// Sweeping and accepting.
const (
	// maxSweepInterval is the sweeper's tick; shorter bounds (tests) tick faster.
	maxSweepInterval = 250 * time.Millisecond
	minSweepInterval = 5 * time.Millisecond
	// stuckRequestAge makes a connection in the middle of its headers sheddable at the cap: a
	// real client sends its headers in milliseconds.
	stuckRequestAge = time.Second
	// shedBatchDivisor: at the cap, up to MaxConnections/shedBatchDivisor connections are closed
	// at once, so that one scan of the connections admits a burst of new ones.
	shedBatchDivisor = 64
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
	// warnInterval rate-limits the warnings a flood causes (accept errors, refusals).
	warnInterval = 10 * time.Second
)

// connPhase is where a connection is in its life, as far as the sweeper cares.
type connPhase uint32

const (
	phaseNew      connPhase = iota // accepted; handshake and first request headers pending
	phaseActive                    // a request is being read, handled or answered
	phaseIdle                      // between requests (keep-alive)
	phaseHijacked                  // handed over to a handler; not ours to time out
	numPhases
)

func (p connPhase) String() string {
	switch p {
	case phaseNew:
		return "new"
	case phaseActive:
		return "active"
	case phaseIdle:
		return "idle"
	}
	return "hijacked"
}

// proto says which protocol a connection speaks, learnt at its first state change.
const (
	protoUnknown uint32 = iota
	protoHTTP1
	protoHTTP2
)

// closeReason says why the listener closed a connection (a metric label).
type closeReason int

const (
	reasonNone          closeReason = iota // closed by net/http or the client
	reasonHeaderTimeout                    // handshake or headers too slow
	reasonWriteTimeout                     // request or write too slow
	reasonIdleTimeout                      // idle too long
	reasonShed                             // closed to admit a new connection at the cap
	numReasons
)

func (r closeReason) String() string {
	switch r {
	case reasonHeaderTimeout:
		return "header_timeout"
	case reasonWriteTimeout:
		return "write_timeout"
	case reasonIdleTimeout:
		return "idle_timeout"
	case reasonShed:
		return "shed"
	}
	return "none"
}

// boundedListener admits connections up to the cap, tracks each one's phase and closes those
// that overstay it.
type boundedListener struct {
	inner  net.Listener
	cfg    ListenerConfig
	logger *slog.Logger
	// metrics is cfg.Metrics, or a private unexported set; m holds this listener's counters.
	metrics *ListenerMetrics
	m       *listenerCounters

	// Connections are stamped with the current epoch instead of the time: reading an atomic is
	// cheaper than reading the clock, twice per request. The sweeper ends an epoch at every tick
	// and records when (ends). An event stamped e happened before epoch e ended, so the time since
	// that end is a lower bound of its age: a late or starved sweeper closes connections late,
	// never early. Epochs start at 1; a stamp of 0 means "not set".
	origin time.Time
	epoch  atomic.Int64

	sweepEvery time.Duration
	highWater  int
	batch      int
	// Bounds in nanoseconds.
	header, write, idle, pressureIdle, stuck int64

	mu sync.Mutex
	// ends[e%len(ends)] is when epoch e ended, in nanoseconds since origin, for the last
	// len(ends) epochs: enough to measure the longest bound.
	ends  []int64
	conns []*trackedConn // every open connection; trackedConn.idx is its position
	// noVictimsEpoch skips the scan for victims after one found none, until the next sweep.
	noVictimsEpoch int64
	scratch        []victim

	// Touched by the sweeper only.
	underPressure              bool
	pressureWarn, pressureOver rateLimitedWarning

	closeOnce sync.Once
	closed    chan struct{} // closed by Close: interrupts the accept back-off
	stopOnce  sync.Once
	started   bool
	stopSweep chan struct{}
	swept     chan struct{} // closed when the sweeper has returned

	// Touched by the Accept goroutine only (net/http accepts from one goroutine).
	acceptWarn, refuseWarn rateLimitedWarning
}

type victim struct {
	c     *trackedConn
	rank  int
	since int64 // an epoch
}

// newBoundedListener wraps inner; start starts its sweeper (tests drive expired themselves).
func newBoundedListener(inner net.Listener, cfg ListenerConfig, logger *slog.Logger) *boundedListener {
	metrics := cfg.Metrics
	if metrics == nil {
		metrics = newListenerMetrics()
	}
	shortest := min(cfg.ReadHeaderTimeout, cfg.WriteTimeout, cfg.PressureIdleTimeout)
	longest := max(cfg.ReadHeaderTimeout, cfg.WriteTimeout, cfg.IdleTimeout, stuckRequestAge)
	sweepEvery := max(minSweepInterval, min(maxSweepInterval, shortest/4))
	l := &boundedListener{
		inner:        inner,
		cfg:          cfg,
		logger:       logger,
		metrics:      metrics,
		origin:       time.Now(),
		ends:         make([]int64, min(1<<16, int(longest/sweepEvery)+4)),
		sweepEvery:   sweepEvery,
		highWater:    cfg.MaxConnections * highWaterPercent / 100,
		batch:        max(1, cfg.MaxConnections/shedBatchDivisor),
		header:       int64(cfg.ReadHeaderTimeout),
		write:        int64(cfg.WriteTimeout),
		idle:         int64(cfg.IdleTimeout),
		pressureIdle: int64(cfg.PressureIdleTimeout),
		stuck:        int64(stuckRequestAge),
		conns:        make([]*trackedConn, 0, min(cfg.MaxConnections, 1024)),
		closed:       make(chan struct{}),
		stopSweep:    make(chan struct{}),
		swept:        make(chan struct{}),
	}
	l.epoch.Store(1)
	l.m = metrics.attach(l)
	return l
}

func (l *boundedListener) start() {
	l.started = true
	go l.sweep()
}

// sinceStart is the monotonic time in the listener's units.
func (l *boundedListener) sinceStart() int64 { return int64(time.Since(l.origin)) }

// endEpochLocked ends the current epoch at clock() and returns that time. The epoch moves on
// before the clock is read: whatever was stamped with the ended epoch happened before its end.
func (l *boundedListener) endEpochLocked(clock func() int64) int64 {
	ended := l.epoch.Add(1) - 1
	now := clock()
	l.ends[ended%int64(len(l.ends))] = now
	return now
}

// ageLocked is a lower bound of the time between an event stamped e and now (see epoch).
func (l *boundedListener) ageLocked(e, now int64) int64 {
	cur := l.epoch.Load()
	if e >= cur {
		return 0 // the current epoch: it may have happened just now
	}
	if n := int64(len(l.ends)); cur-e > n {
		// Older than the epochs remembered: the oldest one remembered ended later.
		e = cur - n
	}
	return max(0, now-l.ends[e%int64(len(l.ends))])
}

func (l *boundedListener) Addr() net.Addr { return l.inner.Addr() }

// Close stops accepting; the open connections are net/http's to drain (Shutdown) and the
// sweeper's to bound until stop.
func (l *boundedListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.inner.Close()
}

// stop ends the sweeper once the server has stopped using the listener's connections.
func (l *boundedListener) stop() {
	l.stopOnce.Do(func() { close(l.stopSweep) })
	if l.started {
		<-l.swept
	}
	l.metrics.detach(l)
}

// Accept returns the next admitted connection. Errors that a busy or starved machine causes
// (out of file descriptors or buffers) are retried after a back-off instead of being returned:
// net/http would retry them too, but logs them only at its ErrorLog's level, and an exhausted
// descriptor table is exactly what an operator must hear about.
func (l *boundedListener) Accept() (net.Conn, error) {
	var backoff time.Duration
	for {
		nc, err := l.inner.Accept()
		if err != nil {
			if !retryableAcceptError(err) {
				return nil, err
			}
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			l.m.acceptErrors.Inc()
			if n, ok := l.acceptWarn.due(time.Now()); ok {
				l.logger.Warn("accepting a connection failed; retrying",
					"error", err, "retryIn", backoff, "failuresSinceLastWarning", n)
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Freeing a descriptor is the only way out that does not depend on clients
				// going away by themselves.
				l.shed(1)
			}
			select {
			case <-l.closed:
				return nil, err
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		if c := l.admit(nc); c != nil {
			return c, nil
		}
	}
}

// retryableAcceptError is an accept failure caused by the machine's state rather than by the
// listener: the next accept may well succeed.
func retryableAcceptError(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	for _, errno := range []syscall.Errno{
		syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN,
		syscall.EPERM, syscall.EPROTO, syscall.ETIMEDOUT,
	} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// admit tracks nc, making room at the cap by closing the oldest idle connections. It returns
// nil when nc had to be refused.
func (l *boundedListener) admit(nc net.Conn) net.Conn {
	c := &trackedConn{Conn: nc, l: l}
	c.since.Store(l.epoch.Load())
	var victims []*trackedConn
	l.mu.Lock()
	if len(l.conns) >= l.cfg.MaxConnections {
		victims = l.pickVictimsLocked(l.sinceStart(), l.batch)
		if len(victims) == 0 {
			open := len(l.conns)
			l.mu.Unlock()
			_ = nc.Close()
			l.m.refused.Inc()
			if n, ok := l.refuseWarn.due(time.Now()); ok {
				l.logger.Warn("connection limit reached and every connection is in the middle of a request; refusing new connections",
					"maxConnections", l.cfg.MaxConnections, "open", open, "refusedSinceLastWarning", n)
			}
			return nil
		}
	}
	c.idx = len(l.conns)
	l.conns = append(l.conns, c)
	l.mu.Unlock()
	for _, v := range victims {
		v.closeBecause(reasonShed)
	}
	return c
}

// shed closes up to n of the connections the cap would close first.
func (l *boundedListener) shed(n int) {
	l.mu.Lock()
	victims := l.pickVictimsLocked(l.sinceStart(), n)
	l.mu.Unlock()
	for _, v := range victims {
		v.closeBecause(reasonShed)
	}
}

// pickVictimsLocked chooses up to n connections to close to make room: idle ones first (the
// longest idle first), then ones that have sent nothing yet (the oldest first), then ones stuck
// in their request headers for over stuckRequestAge. A request in progress is never chosen.
func (l *boundedListener) pickVictimsLocked(now int64, n int) []*trackedConn {
	if l.epoch.Load() == l.noVictimsEpoch {
		return nil
	}
	cands := l.scratch[:0]
	for _, c := range l.conns {
		if rank, since, ok := l.sheddableLocked(c, now); ok {
			cands = append(cands, victim{c: c, rank: rank, since: since})
		}
	}
	// The scratch slice is kept for the next scan, without pointers to connections.
	defer func() { clear(cands[:cap(cands)]); l.scratch = cands[:0] }()
	if len(cands) == 0 {
		// Scanning again for every refused connection would make a flood cost O(cap) per
		// connection; the picture changes at the next sweep at the earliest.
		l.noVictimsEpoch = l.epoch.Load()
		return nil
	}
	slices.SortFunc(cands, func(a, b victim) int {
		return cmp.Or(cmp.Compare(a.rank, b.rank), cmp.Compare(a.since, b.since))
	})
	out := make([]*trackedConn, min(n, len(cands)))
	for i := range out {
		out[i] = cands[i].c
	}
	return out
}

func (l *boundedListener) forget(c *trackedConn) {
	l.mu.Lock()
	if i := c.idx; i >= 0 {
		last := len(l.conns) - 1
		l.conns[i] = l.conns[last]
		l.conns[i].idx = i
		l.conns[last] = nil
		l.conns = l.conns[:last]
		c.idx = -1
		l.noVictimsEpoch = 0 // a slot is free; the next admission needs no victim anyway
	}
	l.mu.Unlock()
}

// sweep closes, every sweepEvery, the connections that overstayed their phase.
func (l *boundedListener) sweep() {
	defer close(l.swept)
	t := time.NewTicker(l.sweepEvery)
	defer t.Stop()
	var expired []expiry
	for {
		select {
		case <-l.stopSweep:
			return
		case <-t.C:
		}
		var open int
		expired, open = l.expired(l.sinceStart, expired[:0])
		for _, e := range expired {
			e.c.closeBecause(e.reason)
		}
		clear(expired)
		l.notePressure(open)
	}
}

type expiry struct {
	c      *trackedConn
	reason closeReason
}

// expired ends the current epoch at clock() and returns the connections that overstayed their
// phase, with the number of open connections.
func (l *boundedListener) expired(clock func() int64, out []expiry) ([]expiry, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.endEpochLocked(clock)
	idle := l.idle
	if len(l.conns) > l.highWater {
		idle = l.pressureIdle
	}
	for _, c := range l.conns {
		if r := l.expiredLocked(c, now, idle); r != reasonNone {
			out = append(out, expiry{c, r})
		}
	}
	return out, len(l.conns)
}

// notePressure logs when the listener enters and leaves the shortened idle timeout, at most
// once per warnInterval each way: the count can hover around the high-water mark.
func (l *boundedListener) notePressure(open int) {
	pressure := open > l.highWater
	if pressure == l.underPressure {
		return
	}
	l.underPressure = pressure
	now := time.Now()
	if pressure {
		if n, ok := l.pressureWarn.due(now); ok {
			l.logger.Warn("many open connections: idle timeout shortened",
				"open", open, "maxConnections", l.cfg.MaxConnections, "idleTimeout", l.cfg.PressureIdleTimeout,
				"timesSinceLastWarning", n)
		}
		return
	}
	if _, ok := l.pressureOver.due(now); ok {
		l.logger.Info("open connections back below the high-water mark: normal idle timeout",
			"open", open, "maxConnections", l.cfg.MaxConnections, "idleTimeout", l.cfg.IdleTimeout)
	}
}

// phaseCounts counts the open connections by phase (for the metrics).
func (l *boundedListener) phaseCounts() (counts [numPhases]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		counts[c.phase.Load()]++
	}
	return counts
}

// connState is the http.Server.ConnState hook: it moves the connection between phases. It runs
// on the connection's own goroutine, twice per request, so it only stores.
func (l *boundedListener) connState(nc net.Conn, state http.ConnState) {
	c := trackedOf(nc)
	if c == nil {
		return
	}
	switch state {
	case http.StateActive, http.StateIdle:
		if c.proto.Load() == protoUnknown {
			c.proto.Store(protocolOf(nc))
		}
		now := l.epoch.Load()
		// since before phase: the sweeper reads phase first, so it never pairs a new phase
		// with the previous one's start.
		if state == http.StateIdle {
			c.reqStart.Store(0)
			c.since.Store(now)
			c.phase.Store(uint32(phaseIdle))
			return
		}
		c.since.Store(now)
		c.phase.Store(uint32(phaseActive))
	case http.StateHijacked:
		c.phase.Store(uint32(phaseHijacked))
	}
}

func trackedOf(nc net.Conn) *trackedConn {
	switch c := nc.(type) {
	case *trackedConn:
		return c
	case *tls.Conn:
		t, _ := c.NetConn().(*trackedConn)
		return t
	}
	return nil
}

// protocolOf is HTTP/2 for a TLS connection that negotiated h2. It is asked once per connection,
// after the handshake (tls.Conn.ConnectionState copies the whole state).
func protocolOf(nc net.Conn) uint32 {
	if tc, ok := nc.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol == "h2" {
		return protoHTTP2
	}
	return protoHTTP1
}

// trackedConn is an accepted connection as the bounded listener sees it. Its timestamps are the
// listener's epochs; 0 means unset.
type trackedConn struct {
	net.Conn
	l *boundedListener
	// idx is the position in l.conns, -1 once forgotten; guarded by l.mu.
	idx int

	phase atomic.Uint32
	proto atomic.Uint32
	// since is when the current phase began.
	since atomic.Int64
	// reqStart is when the first byte arrived in the current phase (new or idle): a request or
	// handshake in progress rather than a silent connection.
	reqStart atomic.Int64
	// writeStart is when the pending Write began.
	writeStart atomic.Int64
	closed     atomic.Bool
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.reqStart.Load() == 0 {
		c.reqStart.Store(c.l.epoch.Load())
	}
	return n, err
}

func (c *trackedConn) Write(p []byte) (int, error) {
	if c.proto.Load() != protoHTTP2 {
		// An HTTP/1 connection writes while active (the whole request is bounded) or while
		// handshaking (bounded as new): no need to time each write.
		return c.Conn.Write(p)
	}
	c.writeStart.Store(c.l.epoch.Load())
	n, err := c.Conn.Write(p)
	c.writeStart.Store(0)
	return n, err
}

// CloseWrite keeps net/http's half-close (before closing a connection whose request body it did
// not read) working through the wrapper.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *trackedConn) Close() error { return c.closeBecause(reasonNone) }

func (c *trackedConn) closeBecause(r closeReason) error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.l.forget(c)
	if r != reasonNone {
		c.l.m.closed[r].Inc()
	}
	return c.Conn.Close()
}

// expiredLocked says whether c overstayed its phase at now, given the idle timeout in force.
func (l *boundedListener) expiredLocked(c *trackedConn, now, idle int64) closeReason {
	if w := c.writeStart.Load(); w != 0 && l.ageLocked(w, now) > l.write {
		return reasonWriteTimeout
	}
	// phase before since and reqStart: see connState.
	phase := connPhase(c.phase.Load())
	h2 := c.proto.Load() == protoHTTP2
	switch phase {
	case phaseNew:
		if l.ageLocked(c.since.Load(), now) > l.header {
			return reasonHeaderTimeout
		}
	case phaseActive:
		// An HTTP/2 connection is active while any of its streams is, possibly for good on a
		// busy one; its writes are bounded above, its streams by streamWriteBound.
		if !h2 && l.ageLocked(c.since.Load(), now) > l.write {
			return reasonWriteTimeout
		}
	case phaseIdle:
		// HTTP/2 frames between requests (pings, settings) are not request headers.
		if r := c.reqStart.Load(); r != 0 && !h2 {
			if l.ageLocked(r, now) > l.header {
				return reasonHeaderTimeout
			}
			return reasonNone
		}
		if l.ageLocked(c.since.Load(), now) > idle {
			return reasonIdleTimeout
		}
	}
	return reasonNone
}

// sheddableLocked says whether c may be closed to admit a new connection, and in which order:
// rank 0 idle, 1 silent since accepted, 2 stuck in its request headers; then the oldest first.
func (l *boundedListener) sheddableLocked(c *trackedConn, now int64) (rank int, since int64, ok bool) {
	phase := connPhase(c.phase.Load())
	since = c.since.Load()
	reqStart := c.reqStart.Load()
	switch {
	case phase == phaseIdle && (reqStart == 0 || c.proto.Load() == protoHTTP2):
		return 0, since, true
	case phase == phaseNew && reqStart == 0:
		return 1, since, true
	case (phase == phaseNew || phase == phaseIdle) && l.ageLocked(reqStart, now) > l.stuck:
		return 2, reqStart, true
	}
	return 0, 0, false
}

// rateLimitedWarning lets one warning through per warnInterval and counts the rest.
type rateLimitedWarning struct {
	last       time.Time
	suppressed int
}

// due counts an occurrence and says whether to log it, with the occurrences since the last log.
func (w *rateLimitedWarning) due(now time.Time) (int, bool) {
	w.suppressed++
	if !w.last.IsZero() && now.Sub(w.last) < warnInterval {
		return 0, false
	}
	n := w.suppressed
	w.last, w.suppressed = now, 0
	return n, true
}
