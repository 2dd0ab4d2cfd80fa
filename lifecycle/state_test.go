package lifecycle

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

const (
	lead      = time.Hour
	retention = 25 * time.Hour
)

// testKeys are four staged ES256 records K1..K4 (cheap to generate), from which tests derive
// records in any phase.
func testKeys(t testing.TB) map[string]Record {
	t.Helper()
	out := map[string]Record{}
	for i := 1; i <= 4; i++ {
		r, err := NewStagedRecord(AlgorithmES256, t0)
		if err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprintf("K%d", i)] = r
	}
	return out
}

// spec describes one record of a test state by key name.
type spec struct {
	key          string
	phase        keys.Phase
	created      time.Time
	publishUntil time.Time
	promoting    time.Time
}

func buildState(k map[string]Record, specs ...spec) *State {
	s := &State{}
	for _, sp := range specs {
		r := k[sp.key]
		r.Phase = sp.phase
		r.Created = t0
		if !sp.created.IsZero() {
			r.Created = sp.created
		}
		r.PublishUntil, r.Promoting = sp.publishUntil, sp.promoting
		if sp.phase != keys.PhaseStaged {
			r.private = nil
		}
		if sp.phase == keys.PhaseActive {
			r.Promoted = r.Created
		}
		if sp.phase == keys.PhasePrevious {
			r.Retired = t0
		}
		s.Keys = append(s.Keys, r)
	}
	s.sort()
	return s
}

// phases renders a state as "K1=active K2=staged" with the test's key names, in kid order.
func phases(k map[string]Record, s *State) string {
	name := map[string]string{}
	for n, r := range k {
		name[r.KID] = n
	}
	var parts []string
	for _, r := range s.Keys {
		parts = append(parts, name[r.KID]+"="+string(r.Phase))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

func TestStateMachine(t *testing.T) {
	k := testKeys(t)
	pub := func(n string) keys.PublicKey { return k[n].Public }
	staged := func(n string) spec { return spec{key: n, phase: keys.PhaseStaged} }
	active := func(n string) spec { return spec{key: n, phase: keys.PhaseActive} }
	previous := func(n string, until time.Time) spec {
		return spec{key: n, phase: keys.PhasePrevious, publishUntil: until}
	}
	later := t0.Add(2 * lead)

	tests := []struct {
		name    string
		start   []spec
		op      func(*State) error
		wantErr error // nil, ErrNotFound, ErrConflict
		want    string
		check   func(*testing.T, *State)
	}{
		// Stage
		{name: "stage into an empty state", op: func(s *State) error { return s.Stage(k["K2"]) }, want: "K2=staged"},
		{name: "stage next to the active key", start: []spec{active("K1")},
			op: func(s *State) error { return s.Stage(k["K2"]) }, want: "K1=active K2=staged"},
		{name: "stage while another key is staged", start: []spec{active("K1"), staged("K2")},
			op: func(s *State) error { return s.Stage(k["K3"]) }, wantErr: ErrConflict, want: "K1=active K2=staged"},
		{name: "stage a kid that is already known", start: []spec{previous("K2", later)},
			op: func(s *State) error { return s.Stage(k["K2"]) }, wantErr: ErrConflict, want: "K2=previous"},

		// StartPromote
		{name: "promote an unknown key", start: []spec{active("K1")},
			op: promote(k["K3"].KID, later, false), wantErr: ErrNotFound, want: "K1=active"},
		{name: "promote the active key", start: []spec{active("K1")},
			op: promote(k["K1"].KID, later, false), wantErr: ErrConflict, want: "K1=active"},
		{name: "promote a previous key", start: []spec{active("K1"), previous("K2", later)},
			op: promote(k["K2"].KID, later, false), wantErr: ErrConflict, want: "K1=active K2=previous"},
		{name: "promote before the publish lead", start: []spec{active("K1"), staged("K2")},
			op: promote(k["K2"].KID, t0.Add(lead-time.Second), false), wantErr: ErrConflict, want: "K1=active K2=staged"},
		{name: "promote before the publish lead with force", start: []spec{active("K1"), staged("K2")},
			op: promote(k["K2"].KID, t0.Add(time.Second), true), want: "K1=active K2=staged",
			check: func(t *testing.T, s *State) {
				if r, _ := s.Lookup(k["K2"].KID); !r.Promoting.Equal(t0.Add(time.Second)) {
					t.Errorf("Promoting = %v", r.Promoting)
				}
			}},
		{name: "promote exactly at the publish lead", start: []spec{active("K1"), staged("K2")},
			op: promote(k["K2"].KID, t0.Add(lead), false), want: "K1=active K2=staged"},
		{name: "promote while a promote is in flight", start: []spec{active("K1"), {key: "K2", phase: keys.PhaseStaged, promoting: later.Add(-time.Second)}},
			op: promote(k["K2"].KID, later, true), wantErr: ErrConflict, want: "K1=active K2=staged"},
		{name: "promote after a stale promote mark", start: []spec{active("K1"), {key: "K2", phase: keys.PhaseStaged, promoting: later.Add(-promoteTimeout)}},
			op: promote(k["K2"].KID, later, false), want: "K1=active K2=staged"},

		// Observe
		{name: "first observation records the active key", op: observe(later, pub("K1")), want: "K1=active",
			check: func(t *testing.T, s *State) {
				if r, _ := s.Lookup(k["K1"].KID); !r.Created.Equal(later) || !r.Promoted.Equal(later) || r.HasPrivateKey() {
					t.Errorf("record %+v", r)
				}
			}},
		{name: "promoted: staged becomes active, active becomes previous", start: []spec{active("K1"), staged("K2")},
			op: observe(later, pub("K2")), want: "K1=previous K2=active",
			check: func(t *testing.T, s *State) {
				k1, _ := s.Lookup(k["K1"].KID)
				if !k1.Retired.Equal(later) || !k1.PublishUntil.Equal(later.Add(retention)) {
					t.Errorf("K1 retired %v publishUntil %v", k1.Retired, k1.PublishUntil)
				}
				k2, _ := s.Lookup(k["K2"].KID)
				if k2.HasPrivateKey() || !k2.Promoted.Equal(later) || !k2.Promoting.IsZero() {
					t.Errorf("K2 kept its private key or times: %+v", k2)
				}
			}},
		{name: "operator swapped the key: unknown key active, old one previous", start: []spec{active("K1")},
			op: observe(later, pub("K3")), want: "K1=previous K3=active"},
		{name: "rollback: a previous key is active again", start: []spec{active("K2"), previous("K1", later)},
			op: observe(later, pub("K1")), want: "K1=active K2=previous",
			check: func(t *testing.T, s *State) {
				if r, _ := s.Lookup(k["K1"].KID); !r.PublishUntil.IsZero() || !r.Retired.IsZero() {
					t.Errorf("reactivated key keeps retirement times: %+v", r)
				}
			}},
		{name: "nothing changed", start: []spec{active("K1"), staged("K2"), previous("K3", later)},
			op: observe(later, pub("K1")), want: "K1=active K2=staged K3=previous",
			check: func(t *testing.T, s *State) {
				if r, _ := s.Lookup(k["K3"].KID); !r.PublishUntil.Equal(later) {
					t.Errorf("previous key's publishUntil moved: %v", r.PublishUntil)
				}
			}},
		{name: "a previous key's deadline does not move when another key departs", start: []spec{active("K2"), previous("K1", t0.Add(time.Hour))},
			op: observe(later, pub("K3")), want: "K1=previous K2=previous K3=active",
			check: func(t *testing.T, s *State) {
				if r, _ := s.Lookup(k["K1"].KID); !r.PublishUntil.Equal(t0.Add(time.Hour)) {
					t.Errorf("K1 publishUntil %v", r.PublishUntil)
				}
			}},

		// Remove
		{name: "withdraw the staged key", start: []spec{active("K1"), staged("K2")},
			op: remove(k["K2"].KID, later, false, Withdrawn), want: "K1=active"},
		{name: "withdraw a key being promoted", start: []spec{active("K1"), {key: "K2", phase: keys.PhaseStaged, promoting: later}},
			op: remove(k["K2"].KID, later, true, ""), wantErr: ErrConflict, want: "K1=active K2=staged"},
		{name: "remove the active key, even with force", start: []spec{active("K1")},
			op: remove(k["K1"].KID, later, true, ""), wantErr: ErrConflict, want: "K1=active"},
		{name: "retire a previous key inside its retention", start: []spec{active("K1"), previous("K2", later.Add(time.Hour))},
			op: remove(k["K2"].KID, later, false, ""), wantErr: ErrConflict, want: "K1=active K2=previous"},
		{name: "retire a previous key inside its retention with force", start: []spec{active("K1"), previous("K2", later.Add(time.Hour))},
			op: remove(k["K2"].KID, later, true, Retired), want: "K1=active K2=previous",
			check: func(t *testing.T, s *State) {
				if ex := s.Expired(later, nil); len(ex) != 1 || ex[0].KID != k["K2"].KID {
					t.Errorf("expired after a forced retire: %v", ex)
				}
			}},
		{name: "retire an expired previous key needs no force", start: []spec{active("K1"), previous("K2", t0)},
			op: remove(k["K2"].KID, later, false, Retired), want: "K1=active K2=previous"},
		{name: "remove an unknown key", start: []spec{active("K1")},
			op: remove(k["K4"].KID, later, true, ""), wantErr: ErrNotFound, want: "K1=active"},

		// Drop
		{name: "drop drops expired previous keys only", start: []spec{active("K1"), previous("K2", t0), previous("K3", later.Add(time.Second)), staged("K4")},
			op: func(s *State) error {
				got := s.Drop([]string{k["K1"].KID, k["K2"].KID, k["K3"].KID, k["K4"].KID}, later, nil)
				if !slices.Equal(got, []string{k["K2"].KID}) {
					return fmt.Errorf("dropped %v", got)
				}
				return nil
			}, want: "K1=active K3=previous K4=staged"},
		{name: "drop never drops a key seen signing, whatever the clock says", start: []spec{active("K1"), previous("K2", t0), previous("K3", t0)},
			op: func(s *State) error {
				if ex := s.Expired(later, []string{k["K2"].KID}); len(ex) != 1 || ex[0].KID != k["K3"].KID {
					return fmt.Errorf("expired %v, want only K3", ex)
				}
				got := s.Drop([]string{k["K2"].KID, k["K3"].KID}, later, []string{k["K2"].KID})
				if !slices.Equal(got, []string{k["K3"].KID}) {
					return fmt.Errorf("dropped %v", got)
				}
				return nil
			}, want: "K1=active K2=previous"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := buildState(k, tc.start...)
			before := s.Clone()
			err := tc.op(s)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("error = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				// A refused operation leaves the state exactly as it was.
				if b1, b2 := mustMarshal(t, before), mustMarshal(t, s); string(b1) != string(b2) {
					t.Errorf("refused operation changed the state:\n%s\n%s", b1, b2)
				}
			}
			if got := phases(k, s); got != tc.want {
				t.Errorf("state = %q, want %q", got, tc.want)
			}
			if err := s.validate(); err != nil {
				t.Errorf("invariant broken: %v", err)
			}
			// Every state the machine produces survives the document round trip.
			back, err := ParseDocument(mustMarshal(t, s))
			if err != nil {
				t.Fatalf("round trip: %v", err)
			}
			if phases(k, back) != phases(k, s) {
				t.Errorf("round trip changed the state")
			}
			if tc.check != nil {
				tc.check(t, s)
			}
		})
	}
}

func promote(kid string, now time.Time, force bool) func(*State) error {
	return func(s *State) error {
		r, err := s.StartPromote(kid, now, lead, force)
		if err == nil && (!r.HasPrivateKey() || r.KID != kid) {
			return fmt.Errorf("StartPromote returned %v without its private key", r)
		}
		return err
	}
}

func observe(now time.Time, active ...keys.PublicKey) func(*State) error {
	return func(s *State) error { s.Observe(active, now, retention); return nil }
}

func remove(kid string, now time.Time, force bool, want Removal) func(*State) error {
	return func(s *State) error {
		_, how, err := s.Remove(kid, now, force)
		if err == nil && how != want {
			return fmt.Errorf("removal %q, want %q", how, want)
		}
		return err
	}
}

func mustMarshal(t *testing.T, s *State) []byte {
	t.Helper()
	b, err := MarshalDocument(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestObserveReportsTransitions(t *testing.T) {
	k := testKeys(t)
	s := buildState(k, spec{key: "K1", phase: keys.PhaseActive}, spec{key: "K2", phase: keys.PhaseStaged})
	got := s.Observe([]keys.PublicKey{k["K2"].Public}, t0, retention)
	want := []Transition{{KID: k["K2"].KID, From: keys.PhaseStaged, To: keys.PhaseActive}, {KID: k["K1"].KID, From: keys.PhaseActive, To: keys.PhasePrevious}}
	if !slices.Equal(got, want) {
		t.Errorf("transitions %v, want %v", got, want)
	}
	if again := s.Observe([]keys.PublicKey{k["K2"].Public}, t0.Add(time.Hour), retention); len(again) != 0 {
		t.Errorf("a repeated observation made transitions %v", again)
	}
}

func TestPublished(t *testing.T) {
	k := testKeys(t)
	s := buildState(k,
		spec{key: "K1", phase: keys.PhaseActive},
		spec{key: "K2", phase: keys.PhaseStaged},
		spec{key: "K3", phase: keys.PhasePrevious, publishUntil: t0})
	got := map[string]keys.Phase{}
	for _, key := range s.Published() {
		got[key.Public.KeyID()] = key.Phase
	}
	want := map[string]keys.Phase{
		// The active record is published as previous: the Secret's own active key outranks it.
		k["K1"].KID: keys.PhasePrevious,
		k["K2"].KID: keys.PhaseStaged,
		k["K3"].KID: keys.PhasePrevious,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Published = %v, want %v", got, want)
	}
	// Merged with the signing-key Secret's view, the active key stays active.
	set := keys.NewSet(append(s.Published(), keys.Key{Public: k["K1"].Public, Phase: keys.PhaseActive})...)
	if kk, _ := set.Lookup(k["K1"].KID); kk.Phase != keys.PhaseActive {
		t.Errorf("merged phase of the active key: %s", kk.Phase)
	}
}

func TestNextRotationStep(t *testing.T) {
	k := testKeys(t)
	const every = 30 * 24 * time.Hour
	tests := []struct {
		name  string
		start []spec
		now   time.Time
		every time.Duration
		want  RotationStep
	}{
		{name: "off", start: []spec{{key: "K1", phase: keys.PhaseActive}}, now: t0.Add(100 * every), every: 0, want: RotationStep{}},
		{name: "no active key yet", now: t0, every: every, want: RotationStep{}},
		{name: "active key young", start: []spec{{key: "K1", phase: keys.PhaseActive}}, now: t0.Add(time.Hour), every: every, want: RotationStep{At: t0.Add(every)}},
		{name: "active key due", start: []spec{{key: "K1", phase: keys.PhaseActive}}, now: t0.Add(every), every: every, want: RotationStep{Stage: true}},
		{name: "staged key within the lead", start: []spec{{key: "K1", phase: keys.PhaseActive}, {key: "K2", phase: keys.PhaseStaged}}, now: t0.Add(time.Minute), every: every,
			want: RotationStep{At: t0.Add(lead)}},
		{name: "staged key past the lead", start: []spec{{key: "K1", phase: keys.PhaseActive}, {key: "K2", phase: keys.PhaseStaged}}, now: t0.Add(lead), every: every,
			want: RotationStep{Promote: k["K2"].KID}},
		{name: "staged key being promoted", start: []spec{{key: "K1", phase: keys.PhaseActive}, {key: "K2", phase: keys.PhaseStaged, promoting: t0.Add(lead)}}, now: t0.Add(lead + time.Second), every: every,
			want: RotationStep{At: t0.Add(lead + promoteTimeout)}},
		{name: "newest active key counts", start: []spec{{key: "K1", phase: keys.PhaseActive}, {key: "K2", phase: keys.PhaseActive, created: t0.Add(every)}}, now: t0.Add(every + time.Hour), every: every,
			want: RotationStep{At: t0.Add(2 * every)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := buildState(k, tc.start...).NextRotationStep(tc.now, tc.every, lead)
			if got != tc.want {
				t.Errorf("step = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestNextDeadline(t *testing.T) {
	k := testKeys(t)
	if d := buildState(k, spec{key: "K1", phase: keys.PhaseActive}).NextDeadline(); !d.IsZero() {
		t.Errorf("deadline without previous keys: %v", d)
	}
	s := buildState(k, spec{key: "K1", phase: keys.PhaseActive},
		spec{key: "K2", phase: keys.PhasePrevious, publishUntil: t0.Add(2 * time.Hour)},
		spec{key: "K3", phase: keys.PhasePrevious, publishUntil: t0.Add(time.Hour)})
	if d := s.NextDeadline(); !d.Equal(t0.Add(time.Hour)) {
		t.Errorf("deadline %v", d)
	}
}

// TestPrivateKeyNeverPrinted: however a record is printed or logged, its private key is not.
func TestPrivateKeyNeverPrinted(t *testing.T) {
	r, err := NewStagedRecord(AlgorithmES256, t0)
	if err != nil {
		t.Fatal(err)
	}
	secret := string(r.private)
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "record", r, "records", []Record{r})
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "record", r)
	for _, out := range []string{fmt.Sprint(r), fmt.Sprintf("%v %+v %#v %s %q", r, r, r, r, r), fmt.Sprintf("%+v", []Record{r}), logged.String()} {
		if strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, secret[40:80]) {
			t.Fatalf("private key printed: %s", out)
		}
	}
}

// TestNewStagedRecord: generated keys are what kube-apiserver accepts, in the PEM forms kubeadm and
// Cluster API write, and an unknown algorithm is refused.
func TestNewStagedRecord(t *testing.T) {
	for _, tc := range []struct{ alg, wantAlg, pemType string }{
		{"", "RS256", "RSA PRIVATE KEY"}, {"RS256", "RS256", "RSA PRIVATE KEY"}, {"ES256", "ES256", "EC PRIVATE KEY"},
	} {
		r, err := NewStagedRecord(tc.alg, t0)
		if err != nil {
			t.Fatal(err)
		}
		if r.Algorithm != tc.wantAlg || r.Phase != keys.PhaseStaged || !strings.Contains(string(r.private), tc.pemType) {
			t.Errorf("alg %q: %v (%d bytes of private key)", tc.alg, r, len(r.private))
		}
		signer, err := parsePrivateKey(r.private)
		if err != nil || !mustPublic(signer).Equal(r.Public) {
			t.Errorf("alg %q: private key does not match: %v", tc.alg, err)
		}
	}
	if _, err := NewStagedRecord("HS256", t0); !errors.Is(err, ErrInvalid) {
		t.Errorf("HS256: %v", err)
	}
}

// TestObserveSigning: a previous key's retention counts from the last time a probe saw it sign,
// never shortened; steady observations are not rewritten before the refresh.
func TestObserveSigning(t *testing.T) {
	k := testKeys(t)
	kid := func(n string) string { return k[n].KID }
	const refresh = 10 * time.Minute
	retiredUntil := t0.Add(retention)
	tests := []struct {
		name        string
		start       []spec
		signing     SigningObservation // the stored observation before
		kids        []string
		at          time.Time
		wantChanged bool
		// wantUntil is K1's publish_until afterwards (zero: K1 is not previous).
		wantUntil      time.Time
		wantLastSigned map[string]time.Time
	}{
		{name: "the active key signs: first observation is stored", start: []spec{{key: "K1", phase: keys.PhaseActive}},
			kids: []string{kid("K1")}, at: t0, wantChanged: true, wantLastSigned: map[string]time.Time{"K1": t0}},
		{name: "the same steady observation within the refresh is not rewritten", start: []spec{{key: "K1", phase: keys.PhaseActive}},
			signing: SigningObservation{At: t0, KIDs: []string{kid("K1")}}, kids: []string{kid("K1")}, at: t0.Add(refresh - time.Second),
			wantLastSigned: map[string]time.Time{"K1": {}}},
		{name: "the same steady observation after the refresh is rewritten", start: []spec{{key: "K1", phase: keys.PhaseActive}},
			signing: SigningObservation{At: t0, KIDs: []string{kid("K1")}}, kids: []string{kid("K1")}, at: t0.Add(refresh),
			wantChanged: true, wantLastSigned: map[string]time.Time{"K1": t0.Add(refresh)}},
		{name: "a previous key still signing: retention counts from the observation", start: []spec{{key: "K2", phase: keys.PhaseActive}, {key: "K1", phase: keys.PhasePrevious, publishUntil: retiredUntil}},
			signing: SigningObservation{At: t0, KIDs: []string{kid("K1")}}, kids: []string{kid("K1")}, at: t0.Add(time.Minute),
			wantChanged: true, wantUntil: t0.Add(time.Minute).Add(retention), wantLastSigned: map[string]time.Time{"K1": t0.Add(time.Minute)}},
		{name: "an older observation never shortens a retention", start: []spec{{key: "K2", phase: keys.PhaseActive}, {key: "K1", phase: keys.PhasePrevious, publishUntil: retiredUntil.Add(time.Hour)}},
			kids: []string{kid("K1")}, at: t0, wantChanged: true, wantUntil: retiredUntil.Add(time.Hour)},
		{name: "a roll in progress: both keys sign", start: []spec{{key: "K2", phase: keys.PhaseActive}, {key: "K1", phase: keys.PhasePrevious, publishUntil: retiredUntil}},
			kids: []string{kid("K1"), kid("K2")}, at: t0.Add(time.Hour), wantChanged: true, wantUntil: t0.Add(time.Hour + retention),
			wantLastSigned: map[string]time.Time{"K1": t0.Add(time.Hour), "K2": t0.Add(time.Hour)}},
		{name: "the observed switch: retention counts from the first observation without the key", start: []spec{{key: "K2", phase: keys.PhaseActive}, {key: "K1", phase: keys.PhasePrevious, publishUntil: t0.Add(time.Hour + retention)}},
			signing: SigningObservation{At: t0.Add(time.Hour), KIDs: []string{kid("K1"), kid("K2")}}, kids: []string{kid("K2")}, at: t0.Add(2 * time.Hour),
			wantChanged: true, wantUntil: t0.Add(2*time.Hour + retention), wantLastSigned: map[string]time.Time{"K1": {}, "K2": t0.Add(2 * time.Hour)}},
		{name: "after the switch later observations leave the retention alone", start: []spec{{key: "K2", phase: keys.PhaseActive}, {key: "K1", phase: keys.PhasePrevious, publishUntil: t0.Add(time.Hour + retention)}},
			signing: SigningObservation{At: t0.Add(time.Hour), KIDs: []string{kid("K2")}}, kids: []string{kid("K2")}, at: t0.Add(2 * time.Hour),
			wantChanged: true, wantUntil: t0.Add(time.Hour + retention)},
		{name: "a key in no source is stored as observed only", start: []spec{{key: "K1", phase: keys.PhaseActive}},
			kids: []string{kid("K3")}, at: t0, wantChanged: true, wantLastSigned: map[string]time.Time{"K1": {}}},
		{name: "no kids: nothing", start: []spec{{key: "K1", phase: keys.PhaseActive}}, at: t0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := buildState(k, tc.start...)
			s.Signing = tc.signing
			changed := s.ObserveSigning(tc.kids, tc.at, retention, refresh)
			if changed != tc.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tc.wantChanged)
			}
			if changed && (!s.Signing.At.Equal(tc.at) || !slices.Equal(s.Signing.KIDs, tc.kids)) {
				t.Errorf("stored observation %+v, want %v at %v", s.Signing, tc.kids, tc.at)
			}
			if r, _ := s.Lookup(kid("K1")); r.Phase == keys.PhasePrevious && !r.PublishUntil.Equal(tc.wantUntil) {
				t.Errorf("K1 publishUntil %v, want %v", r.PublishUntil, tc.wantUntil)
			}
			for n, want := range tc.wantLastSigned {
				if r, _ := s.Lookup(kid(n)); !r.LastSigned.Equal(want) {
					t.Errorf("%s lastSigned %v, want %v", n, r.LastSigned, want)
				}
			}
			back, err := ParseDocument(mustMarshal(t, s))
			if err != nil {
				t.Fatalf("round trip: %v", err)
			}
			if !back.Signing.At.Equal(s.Signing.At) || !slices.Equal(back.Signing.KIDs, sortedClone(s.Signing.KIDs)) {
				t.Errorf("round trip changed the observation: %+v → %+v", s.Signing, back.Signing)
			}
			for _, r := range s.Keys {
				if b, _ := back.Lookup(r.KID); !b.LastSigned.Equal(r.LastSigned) {
					t.Errorf("round trip changed lastSigned of %s", r.KID)
				}
			}
		})
	}
}

func sortedClone(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

func TestOutgoingSigningAndNewestActive(t *testing.T) {
	k := testKeys(t)
	s := buildState(k,
		spec{key: "K1", phase: keys.PhasePrevious, publishUntil: t0},
		spec{key: "K2", phase: keys.PhaseActive, created: t0.Add(time.Hour)},
		spec{key: "K3", phase: keys.PhasePrevious, publishUntil: t0})
	s.Signing = SigningObservation{At: t0, KIDs: []string{k["K1"].KID, k["K2"].KID}}
	out := s.OutgoingSigning()
	if len(out) != 1 || out[0].KID != k["K1"].KID {
		t.Errorf("outgoing signing %v, want K1 only", out)
	}
	if r, ok := s.NewestActive(); !ok || r.KID != k["K2"].KID {
		t.Errorf("newest active %v %v", r, ok)
	}
}
