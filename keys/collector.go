package keys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Source watches one place that holds key material and reports its complete current content each
// time it changes. Implementations live in their own packages (kubesource, filesource).
type Source interface {
	// Name identifies the source in logs, metrics and readiness details, e.g.
	// "secret/kube-system/cluster-sa" or "file//etc/kubernetes/pki/sa.pub".
	Name() string
	// Run reports observations until ctx is done. It returns nil when ctx ends, and an error only
	// when the source cannot run at all (for example the API server rejects the watch for good).
	Run(ctx context.Context, report func(Observation)) error
}

// Observation is what a source holds at one moment: its keys, or why it could not read them.
// A failed observation (Err != nil) never replaces the source's last good keys.
type Observation struct {
	Keys []Key
	Err  error
	// AllowEmpty makes a good observation without keys a valid one: the source holds no key right
	// now and that is expected (the lifecycle state between two rotations). Without it, an
	// observation without keys is a failure, which keeps the source's last good keys published.
	AllowEmpty bool
}

// SourceStatus is a source's health as shown on /readyz and in metrics.
type SourceStatus struct {
	Name string `json:"name"`
	// Ready means the source delivered good keys at least once; its last good keys are published.
	Ready bool `json:"ready"`
	// Healthy means its latest observation was good.
	Healthy    bool      `json:"healthy"`
	Keys       int       `json:"keys"`
	LastError  string    `json:"lastError,omitempty"`
	LastGood   time.Time `json:"lastGood,omitzero"`
	LastFailed time.Time `json:"lastFailed,omitzero"`
	Errors     uint64    `json:"errors"`
}

// Collector merges the last good keys of every source into one Set and hands each new Set to
// onChange. A source that fails keeps contributing its last good keys, so a malformed or deleted
// Secret can never empty the published JWKS.
type Collector struct {
	sources  []Source
	onChange func(Set)
	logger   *slog.Logger
	now      func() time.Time

	mu       sync.Mutex
	status   map[string]*SourceStatus
	lastGood map[string][]Key
	// failing is, for each source whose latest observation failed, when that run of failures
	// began, so that the recovery can say how long it lasted.
	failing map[string]time.Time
	current Set
	hasSet  bool
}

// NewCollector returns a collector over sources. onChange is called, serialised, with every Set that
// differs from the previous one; it is first called once every source has delivered good keys, so
// that a restart never publishes a partial set. onChange runs under the collector's lock (that is
// what keeps sets in order): it must not call back into the collector.
func NewCollector(logger *slog.Logger, onChange func(Set), sources ...Source) (*Collector, error) {
	if len(sources) == 0 {
		return nil, errors.New("no key source configured")
	}
	c := &Collector{
		sources:  sources,
		onChange: onChange,
		logger:   logger,
		now:      time.Now,
		status:   make(map[string]*SourceStatus, len(sources)),
		lastGood: make(map[string][]Key, len(sources)),
		failing:  make(map[string]time.Time, len(sources)),
	}
	for _, s := range sources {
		if _, dup := c.status[s.Name()]; dup {
			return nil, fmt.Errorf("key source %s configured twice", s.Name())
		}
		c.status[s.Name()] = &SourceStatus{Name: s.Name()}
	}
	return c, nil
}

// NewFedCollector returns a collector whose sources are fed from outside: the caller reports
// each named source's observations with Observe, and Run is not used. A fleet feeds thousands of
// collectors from one shared watch this way, without a goroutine per source.
func NewFedCollector(logger *slog.Logger, onChange func(Set), sourceNames ...string) (*Collector, error) {
	sources := make([]Source, len(sourceNames))
	for i, n := range sourceNames {
		sources[i] = fedSource(n)
	}
	return NewCollector(logger, onChange, sources...)
}

// fedSource is a source whose observations arrive through Collector.Observe.
type fedSource string

func (s fedSource) Name() string { return string(s) }

func (s fedSource) Run(ctx context.Context, _ func(Observation)) error {
	<-ctx.Done()
	return nil
}

// Observe reports an observation of the named source, as its Run would. A source the collector
// does not have is a programming error and is logged and ignored.
func (c *Collector) Observe(source string, o Observation) {
	c.mu.Lock()
	_, ok := c.status[source]
	c.mu.Unlock()
	if !ok {
		c.logger.Error("observation of an unknown key source ignored", "source", source)
		return
	}
	c.observe(source, o)
}

// Run runs every source until ctx is done. If a source fails for good, the others are stopped and
// its error is returned.
func (c *Collector) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		runErr  error // the first source failure; the end of ctx itself is no error
	)
	for _, s := range c.sources {
		wg.Go(func() {
			err := s.Run(ctx, func(o Observation) { c.observe(s.Name(), o) })
			if err != nil && ctx.Err() == nil {
				errOnce.Do(func() { runErr = fmt.Errorf("key source %s: %w", s.Name(), err) })
				cancel()
			}
		})
	}
	<-ctx.Done()
	wg.Wait()
	return runErr
}

func (c *Collector) observe(source string, o Observation) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.status[source]
	now := c.now()
	o.Keys = slices.DeleteFunc(slices.Clone(o.Keys), func(k Key) bool { return k.Public.IsZero() }) // the source may reuse its slice
	if o.Err == nil && len(o.Keys) == 0 && !o.AllowEmpty {
		o.Err = errors.New("holds no key")
	}
	if o.Err != nil {
		st.Healthy = false
		st.LastError = o.Err.Error()
		st.LastFailed = now
		st.Errors++
		if _, ok := c.failing[source]; !ok {
			c.failing[source] = now
		}
		if st.Ready {
			c.logger.Warn("key source failed; still publishing its last good keys", "source", source, "error", o.Err, "keys", st.Keys)
		} else {
			c.logger.Error("key source has no usable keys yet", "source", source, "error", o.Err)
		}
		return
	}
	if since, ok := c.failing[source]; ok {
		// Failures are logged as warnings or errors; without this line the log would end on the
		// failure and an operator could not tell whether the source is still broken.
		c.logger.Info("key source recovered", "source", source, "failingFor", now.Sub(since).Round(time.Millisecond), "lastError", st.LastError, "keys", len(o.Keys))
		delete(c.failing, source)
	}
	st.Ready, st.Healthy, st.LastGood, st.Keys = true, true, now, len(o.Keys)
	c.lastGood[source] = o.Keys

	for _, s := range c.status {
		if !s.Ready {
			return
		}
	}
	var all []Key
	for _, ks := range c.lastGood {
		all = append(all, ks...)
	}
	next := NewSet(all...)
	if c.hasSet && next.Equal(c.current) {
		return
	}
	c.current, c.hasSet = next, true
	c.logger.Info("key set changed", "source", source, "kids", next.KeyIDs())
	if next.Len() > AWSMaxJWKSKeys {
		// Logged here, once per key-set change, rather than per request or render. The set is
		// published all the same: dropping keys would break every relying party for the tokens
		// those keys signed, while AWS alone suffers from too many (see AWSMaxJWKSKeys).
		// --legacy-empty-kid doubles the JWKS entries; the collector does not know about it, so
		// between 51 and 100 keys with it only doctor's jwks-keys check notices.
		c.logger.Warn("publishing more keys than AWS STS accepts in one JWKS; STS rejects tokens with \"Couldn't retrieve verification key\" until keys are removed",
			"keys", next.Len(), "awsLimit", AWSMaxJWKSKeys, "fix", "remove keys no longer needed from the key sources (old entries of a verification bundle, retired lifecycle keys)")
	}
	// onChange runs under the lock so that sets are delivered in order.
	c.onChange(next)
}

// Status returns every source's status, in configuration order.
func (c *Collector) Status() []SourceStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]SourceStatus, 0, len(c.sources))
	for _, s := range c.sources {
		out = append(out, *c.status[s.Name()])
	}
	return out
}
