package sourcetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// place is an in-memory place a fake source watches.
type place struct {
	mu      sync.Mutex
	exists  bool
	keys    []Key
	bad     Corruption    // "" while the content is good
	changed chan struct{} // closed and replaced on every write
}

func (p *place) write(exists bool, bad Corruption, ks []Key) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.exists, p.bad, p.keys = exists, bad, append([]Key(nil), ks...)
	close(p.changed)
	p.changed = make(chan struct{})
}

// fakeSource is a keys.Source over a place, with an optional fault that breaks one behaviour.
type fakeSource struct {
	name  string
	p     *place
	fault string
	calls atomic.Int32
}

func (s *fakeSource) Name() string {
	if s.fault == "unstable-name" {
		return fmt.Sprintf("%s#%d", s.name, s.calls.Add(1))
	}
	return s.name
}

func (s *fakeSource) Run(ctx context.Context, report func(keys.Observation)) error {
	last := ""
	reported := false
	for {
		s.p.mu.Lock()
		changed, o := s.p.changed, s.observe()
		s.p.mu.Unlock()
		if s.fault == "early-return" && o.Err != nil && reported {
			return nil
		}
		if s.fault == "stale" && reported && o.Err == nil {
			o = keys.Observation{} // keeps reporting nothing new once it has reported keys
		} else if sig := describe(o); sig != last {
			report(o)
			last, reported = sig, true
		}
		select {
		case <-ctx.Done():
			if s.fault == "slow-cancel" {
				time.Sleep(CancelWithin + time.Second)
			}
			return nil
		case <-changed:
		}
	}
}

func (s *fakeSource) observe() keys.Observation {
	p := s.p
	switch {
	case !p.exists && s.fault == "absent-is-empty":
		return keys.Observation{AllowEmpty: true}
	case !p.exists:
		return keys.Observation{Err: errors.New(s.name + ": not found")}
	case p.bad != "" && s.fault == "partial":
		ks := p.keys
		if p.bad == Truncated && len(ks) > 0 {
			ks = ks[:len(ks)-1]
		}
		return keys.Observation{Keys: s.keysOf(ks)}
	case p.bad != "" && s.fault == "quote":
		for _, k := range p.keys {
			if k.Private {
				body := strings.Join(strings.Split(string(k.PrivatePEM()), "\n")[1:3], "")
				return keys.Observation{Err: fmt.Errorf("%s: cannot parse %q", s.name, body[8:40])}
			}
		}
		return keys.Observation{Err: fmt.Errorf("%s: %s", s.name, p.bad)}
	case p.bad != "":
		return keys.Observation{Err: fmt.Errorf("%s: %s", s.name, p.bad)}
	}
	ks := p.keys
	if s.fault == "drop-key" && len(ks) > 1 {
		ks = ks[:len(ks)-1]
	}
	return keys.Observation{Keys: s.keysOf(ks)}
}

func (s *fakeSource) keysOf(ks []Key) []keys.Key {
	out := make([]keys.Key, len(ks))
	for i, k := range ks {
		out[i] = keys.Key{Public: k.PublicKey(), Phase: fakePhase(k.Private)}
	}
	return out
}

func fakePhase(private bool) keys.Phase {
	if private {
		return keys.PhaseActive
	}
	return keys.PhasePublished
}

func fakeHarness(fault string, wait time.Duration) func(t *testing.T) Harness {
	var n atomic.Int32
	return func(t *testing.T) Harness {
		p := &place{changed: make(chan struct{})}
		return Harness{
			Source: &fakeSource{name: fmt.Sprintf("fake/%d", n.Add(1)), p: p, fault: fault},
			SetKeys: func(_ context.Context, ks ...Key) error {
				p.write(true, "", ks)
				return nil
			},
			Corrupt: func(_ context.Context, c Corruption, ks ...Key) error {
				p.write(true, c, ks)
				return nil
			},
			Remove: func(context.Context) error {
				p.write(false, "", nil)
				return nil
			},
			Phase: fakePhase,
			Wait:  wait,
		}
	}
}

// TestFakeConformance: a source that does everything right passes.
func TestFakeConformance(t *testing.T) {
	Run(t, fakeHarness("", 0))
}

// TestFaultySource is run by TestSuiteCatchesBrokenSources in a child process, with one fault.
func TestFaultySource(t *testing.T) {
	fault := os.Getenv("SOURCETEST_FAULT")
	if fault == "" {
		t.Skip("runs only as the child process of TestSuiteCatchesBrokenSources")
	}
	// A faulty source fails by timing out on some waits: no need to wait for long.
	Run(t, fakeHarness(fault, 2*time.Second))
}

// TestSuiteCatchesBrokenSources: each fault, which breaks one behaviour of the contract, fails
// the subtest that pins that behaviour down.
func TestSuiteCatchesBrokenSources(t *testing.T) {
	if os.Getenv("SOURCETEST_FAULT") != "" {
		t.Skip("in the child process")
	}
	for _, tc := range []struct {
		fault   string
		subtest string // the subtest to run (its name as the output prints it)
		says    string // what its failure says
	}{
		{"unstable-name", "Name", "Name()"},
		{"drop-key", "InitialContent", "is missing"},
		{"absent-is-empty", "MissingAtStart", "want an error for a missing place"},
		{"stale", "Change", "not reported within"},
		{"partial", "Malformed", "want an error"},
		{"quote", "Malformed", "quotes"},
		{"absent-is-empty", "Removal", "want an error for a missing place"},
		{"early-return", "Removal", "Run returned"},
		{"slow-cancel", "CancelReturns/holding_keys", "did not return within"},
	} {
		t.Run(tc.fault+"/"+tc.subtest, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			run := "^TestFaultySource$"
			for _, name := range strings.Split(tc.subtest, "/") {
				run += "/^" + regexp.QuoteMeta(name) + "$"
			}
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run="+run, "-test.count=1")
			cmd.Env = append(os.Environ(), "SOURCETEST_FAULT="+tc.fault)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a source with fault %s:\n%s", tc.fault, out)
			}
			if !strings.Contains(string(out), "--- FAIL: TestFaultySource/"+tc.subtest) || !strings.Contains(string(out), tc.says) {
				t.Fatalf("with fault %s, want %s to fail saying %q:\n%s", tc.fault, tc.subtest, tc.says, out)
			}
		})
	}
}
