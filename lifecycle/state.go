package lifecycle

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// Errors callers map to their own vocabulary (the admin API: 404, 409, 400). They are always
// wrapped with a message that says what to do.
var (
	// ErrNotFound: no key with that kid in the state.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the key's phase (or a promote in flight, or the publish lead) does not allow it.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the request itself is wrong (an unknown algorithm).
	ErrInvalid = errors.New("invalid")
)

// promoteTimeout bounds how long a promote in flight blocks a withdraw or a second promote of the
// same key: a replica that died between marking the key and writing the signing-key Secret must
// not block it for ever.
const promoteTimeout = time.Minute

// Record is one key's lifecycle entry. The private key of a staged key is held unexported and
// redacted in every printed form; only the state document (and the signing-key Secret, on promote)
// ever receives it.
type Record struct {
	KID       string
	Phase     keys.Phase // keys.PhaseStaged, keys.PhaseActive or keys.PhasePrevious
	Algorithm string
	Public    keys.PublicKey
	// Created is when the key was staged, or first seen active for a key the issuer did not stage.
	Created time.Time
	// Promoted is when the key became active (zero for a staged key).
	Promoted time.Time
	// Retired is when the key left the signing-key Secret (previous keys only).
	Retired time.Time
	// PublishUntil is when a previous key stops being published and is pruned.
	PublishUntil time.Time
	// Promoting is set while a promote of this staged key is in flight.
	Promoting time.Time
	// LastSigned is when a signing probe last saw the control plane sign with the key (zero if
	// never, or if no probe runs).
	LastSigned time.Time
	// KMSKey is the ARN of the AWS KMS key holding the private key (signer mode only): the key
	// signs through kms:Sign, and no private key is in the state.
	KMSKey string

	private secretPEM
}

// HasPrivateKey reports whether the record carries a private key (staged keys do).
func (r Record) HasPrivateKey() bool { return len(r.private) > 0 }

// LogValue keeps the private key out of structured logs.
func (r Record) LogValue() slog.Value {
	return slog.GroupValue(slog.String("kid", r.KID), slog.String("phase", string(r.Phase)), slog.String("alg", r.Algorithm))
}

// String identifies the record without anything secret.
func (r Record) String() string { return string(r.Phase) + " " + r.Algorithm + ":" + r.KID }

// secretPEM is private key material; every fmt verb prints a placeholder.
type secretPEM []byte

func (secretPEM) String() string                 { return "[redacted]" }
func (secretPEM) GoString() string               { return "[redacted]" }
func (s secretPEM) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte("[redacted]")) }
func (s secretPEM) LogValue() slog.Value         { return slog.StringValue("[redacted]") }
func (s secretPEM) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// State is the whole lifecycle: every staged, active and previous key, and the signing-key Secret
// the active keys are read from. Its methods are the state machine; they do no I/O and take the
// current time as an argument, so each transition is a pure function the Store applies inside a
// compare-and-swap.
type State struct {
	// SigningSecret is NAMESPACE/NAME of the signing-key Secret this state follows; empty until
	// the first reconcile.
	SigningSecret string
	Keys          []Record
	// Signing is the latest persisted observation of what the control plane signs with; zero
	// when no signing probe runs.
	Signing SigningObservation

	// Signer marks a signer-mode state (KEP-740): the issuer's signer signs with the active
	// record, whose private key is kept here, and there is no signing-key Secret. Promote flips
	// staged to active in one write; every signer follows within its refresh hint.
	Signer bool
	// ID names a signer-mode state's lineage, so that a signer's local cache of another
	// cluster's state (a foreign cache) is refused instead of overwriting this one.
	ID string
	// Generation counts a signer-mode state's writes: between a signer's cache and the state
	// Secret, the higher generation is the newer.
	Generation int64
	// KeysChanged is when a signer-mode state's keys last changed (a key added, removed or
	// changing phase): the data timestamp the signer gives kube-apiserver.
	KeysChanged time.Time
}

// SigningObservation is what a signing probe saw the control plane sign with.
type SigningObservation struct {
	At time.Time
	// KIDs may include keys the state does not know (keys in no source, or in other sources).
	KIDs []string
}

// Signs reports whether kid was among the observed signing keys.
func (o SigningObservation) Signs(kid string) bool { return slices.Contains(o.KIDs, kid) }

// Clone returns a deep copy.
func (s *State) Clone() *State {
	c := &State{SigningSecret: s.SigningSecret, Keys: slices.Clone(s.Keys),
		Signing: SigningObservation{At: s.Signing.At, KIDs: slices.Clone(s.Signing.KIDs)},
		Signer:  s.Signer, ID: s.ID, Generation: s.Generation, KeysChanged: s.KeysChanged}
	for i := range c.Keys {
		c.Keys[i].private = slices.Clone(c.Keys[i].private)
	}
	return c
}

// Lookup returns the record of kid.
func (s *State) Lookup(kid string) (Record, bool) {
	i := s.index(kid)
	if i < 0 {
		return Record{}, false
	}
	return s.Keys[i], true
}

func (s *State) index(kid string) int {
	return slices.IndexFunc(s.Keys, func(r Record) bool { return r.KID == kid })
}

// Staged returns the staged key, if any.
func (s *State) Staged() (Record, bool) {
	for _, r := range s.Keys {
		if r.Phase == keys.PhaseStaged {
			return r, true
		}
	}
	return Record{}, false
}

// Published is what the state contributes to the JWKS: staged keys as staged, previous keys as
// previous, and active records as previous — the signing-key Secret's own active key outranks
// them while it is there, and once it has left the Secret it stays published without a gap until
// the departure is recorded.
func (s *State) Published() []keys.Key {
	out := make([]keys.Key, 0, len(s.Keys))
	for _, r := range s.Keys {
		phase := keys.PhasePrevious
		switch {
		case r.Phase == keys.PhaseStaged:
			phase = keys.PhaseStaged
		case r.Phase == keys.PhaseActive && s.Signer:
			// No signing-key Secret outranks the state: it is what signs.
			phase = keys.PhaseActive
		}
		out = append(out, keys.Key{Public: r.Public, Phase: phase})
	}
	return out
}

// Stage adds a staged key. Only one key may be staged at a time.
func (s *State) Stage(r Record) error {
	if cur, ok := s.Staged(); ok {
		return fmt.Errorf("%w: key %s is already staged: promote or withdraw it first", ErrConflict, cur.KID)
	}
	if _, ok := s.Lookup(r.KID); ok {
		return fmt.Errorf("%w: key %s is already in the lifecycle", ErrConflict, r.KID)
	}
	if r.Phase != keys.PhaseStaged || !r.CanSign() {
		return fmt.Errorf("staging key %s: a staged record needs phase staged and a private key or a KMS key", r.KID)
	}
	s.Keys = append(s.Keys, r)
	s.sort()
	return nil
}

// PromotableAt is when a staged key has been published for lead.
func (r Record) PromotableAt(lead time.Duration) time.Time { return r.Created.Add(lead) }

// StartPromote marks the staged key kid as being promoted and returns it with its private key. It
// refuses a key that is not staged, a key already being promoted, and — unless force — a key
// published for less than lead: relying parties that cached the JWKS before the key was staged
// would reject its tokens.
func (s *State) StartPromote(kid string, now time.Time, lead time.Duration, force bool) (Record, error) {
	i := s.index(kid)
	if i < 0 {
		return Record{}, fmt.Errorf("%w: no key %s in the lifecycle", ErrNotFound, kid)
	}
	r := &s.Keys[i]
	if r.Phase != keys.PhaseStaged {
		return Record{}, fmt.Errorf("%w: key %s is %s; only a staged key can be promoted", ErrConflict, kid, r.Phase)
	}
	if !r.Promoting.IsZero() && now.Sub(r.Promoting) < promoteTimeout {
		return Record{}, fmt.Errorf("%w: a promote of key %s is already in progress (since %s)", ErrConflict, kid, r.Promoting.UTC().Format(time.RFC3339))
	}
	if at := r.PromotableAt(lead); now.Before(at) && !force {
		return Record{}, fmt.Errorf("%w: key %s has been published for %s, less than the publish lead %s: relying parties may not have it cached yet; promote after %s, or with force=true",
			ErrConflict, kid, now.Sub(r.Created).Round(time.Second), lead, at.UTC().Format(time.RFC3339))
	}
	r.Promoting = now
	return *r, nil
}

// AbortPromote clears a promote mark after the signing-key Secret could not be written.
func (s *State) AbortPromote(kid string) {
	if i := s.index(kid); i >= 0 {
		s.Keys[i].Promoting = time.Time{}
	}
}

// Transition is one phase change made by Observe, for logs.
type Transition struct {
	KID      string
	From, To keys.Phase // From is "" for a key seen for the first time
}

// Observe reconciles the state with the keys that are active in the signing-key Secret now:
//
//   - an active key the state has as staged was promoted: it becomes active and its private key
//     is dropped from the state (it lives in the signing-key Secret now);
//   - an active key the state does not know (an operator or a Cluster API rollout put it there)
//     is recorded as active;
//   - an active key the state has as previous was put back (a rollback): active again;
//   - an active record whose key is no longer active in the Secret becomes previous, published
//     until now + retention.
//
// active must be non-empty: a Secret without a signing key says nothing about departures.
func (s *State) Observe(active []keys.PublicKey, now time.Time, retention time.Duration) []Transition {
	var out []Transition
	isActive := map[string]bool{}
	for _, k := range active {
		isActive[k.KeyID()] = true
		i := s.index(k.KeyID())
		if i < 0 {
			s.Keys = append(s.Keys, Record{KID: k.KeyID(), Phase: keys.PhaseActive, Algorithm: k.Algorithm(), Public: k, Created: now, Promoted: now})
			out = append(out, Transition{KID: k.KeyID(), To: keys.PhaseActive})
			continue
		}
		r := &s.Keys[i]
		if r.Phase == keys.PhaseActive {
			continue
		}
		out = append(out, Transition{KID: r.KID, From: r.Phase, To: keys.PhaseActive})
		r.Phase, r.Promoted = keys.PhaseActive, now
		r.private, r.Promoting, r.Retired, r.PublishUntil = nil, time.Time{}, time.Time{}, time.Time{}
	}
	for i := range s.Keys {
		r := &s.Keys[i]
		if r.Phase == keys.PhaseActive && !isActive[r.KID] {
			r.Phase, r.Retired, r.PublishUntil = keys.PhasePrevious, now, now.Add(retention)
			out = append(out, Transition{KID: r.KID, From: keys.PhaseActive, To: keys.PhasePrevious})
		}
	}
	s.sort()
	return out
}

// ObserveSigning records a signing probe's observation at: the control plane signs with kids.
// Each record among them gets LastSigned = at, and a previous key that still signs, or that the
// stored observation saw signing and this one no longer does (the observed switch), has its
// retention counted from at — never shortened: publish_until only moves later. The observation
// itself is replaced when it says something new (other kids, a key that has left the
// signing-key Secret still signing) or when the stored one is older than refresh, so a steady
// state costs one write per refresh, not one per probe round. It reports whether it changed
// anything.
func (s *State) ObserveSigning(kids []string, at time.Time, retention, refresh time.Duration) bool {
	if len(kids) == 0 {
		return false
	}
	outgoing := false
	for _, kid := range kids {
		if r, ok := s.Lookup(kid); ok && r.Phase != keys.PhaseActive {
			outgoing = true
		}
	}
	if !outgoing && slices.Equal(s.Signing.KIDs, kids) && at.Sub(s.Signing.At) < refresh {
		return false
	}
	stopped := s.Signing.KIDs
	s.Signing = SigningObservation{At: at, KIDs: slices.Clone(kids)}
	for i := range s.Keys {
		r := &s.Keys[i]
		signs := slices.Contains(kids, r.KID)
		if signs && at.After(r.LastSigned) {
			r.LastSigned = at
		}
		// A key seen signing, and a key the previous observation saw that this one does not (the
		// observed switch: probes that failed in between cannot tell when it really stopped), are
		// retained from now.
		if !signs && !slices.Contains(stopped, r.KID) || r.Phase != keys.PhasePrevious {
			continue
		}
		if until := at.Add(retention); until.After(r.PublishUntil) {
			r.PublishUntil = until
		}
	}
	return true
}

// OutgoingSigning lists the records the observation saw signing although they are no longer
// active in the signing-key Secret: the control plane has not been rolled onto the Secret's key.
func (s *State) OutgoingSigning() []Record {
	var out []Record
	for _, r := range s.Keys {
		if r.Phase == keys.PhasePrevious && s.Signing.Signs(r.KID) {
			out = append(out, r)
		}
	}
	return out
}

// NewestActive is the active record promoted last (the key the Secret says should sign).
func (s *State) NewestActive() (Record, bool) {
	var (
		best  Record
		found bool
	)
	for _, r := range s.Keys {
		if r.Phase == keys.PhaseActive && (!found || r.Promoted.After(best.Promoted)) {
			best, found = r, true
		}
	}
	return best, found
}

// Removal says what Remove did.
type Removal string

const (
	// Withdrawn: a staged key was removed before it ever signed.
	Withdrawn Removal = "withdrawn"
	// Retired: a previous key's retention was cut short; it is pruned at once.
	Retired Removal = "retired"
)

// Remove withdraws a staged key (gone from the state, so from the JWKS) or retires a previous key
// early (its publish_until becomes now, so the next prune drops it from the state and from the
// verification bundle). Retiring inside the retention window invalidates tokens that may still be
// in use, so it needs force — the case for a compromised key. The active key is never removed.
func (s *State) Remove(kid string, now time.Time, force bool) (Record, Removal, error) {
	i := s.index(kid)
	if i < 0 {
		return Record{}, "", fmt.Errorf("%w: no key %s in the lifecycle", ErrNotFound, kid)
	}
	r := s.Keys[i]
	switch r.Phase {
	case keys.PhaseStaged:
		if !r.Promoting.IsZero() && now.Sub(r.Promoting) < promoteTimeout {
			return Record{}, "", fmt.Errorf("%w: key %s is being promoted; try again in a moment", ErrConflict, kid)
		}
		s.Keys = slices.Delete(s.Keys, i, i+1)
		return r, Withdrawn, nil
	case keys.PhasePrevious:
		if now.Before(r.PublishUntil) && !force {
			return Record{}, "", fmt.Errorf("%w: key %s is retained until %s because tokens it signed may still be in use; retire it early (e.g. after a compromise) with force=true",
				ErrConflict, kid, r.PublishUntil.UTC().Format(time.RFC3339))
		}
		if now.Before(r.PublishUntil) {
			s.Keys[i].PublishUntil = now
		}
		return s.Keys[i], Retired, nil
	default:
		return Record{}, "", fmt.Errorf("%w: key %s is %s: the key the cluster signs with is never removed; stage and promote a successor first", ErrConflict, kid, r.Phase)
	}
}

// Expired lists the previous keys whose publish_until has passed, except those in signing: a key
// the control plane is seen signing with is never pruned, whatever the clock says.
func (s *State) Expired(now time.Time, signing []string) []Record {
	var out []Record
	for _, r := range s.Keys {
		if r.Phase == keys.PhasePrevious && !now.Before(r.PublishUntil) && !slices.Contains(signing, r.KID) {
			out = append(out, r)
		}
	}
	return out
}

// Drop removes the expired previous keys among kids, and reports the ones it removed. A key that
// is no longer expired (a rollback made it active again, or a probe saw it signing, meanwhile) is
// kept.
func (s *State) Drop(kids []string, now time.Time, signing []string) []string {
	var dropped []string
	s.Keys = slices.DeleteFunc(s.Keys, func(r Record) bool {
		if r.Phase == keys.PhasePrevious && !now.Before(r.PublishUntil) && slices.Contains(kids, r.KID) && !slices.Contains(signing, r.KID) {
			dropped = append(dropped, r.KID)
			return true
		}
		return false
	})
	return dropped
}

// NextDeadline is the earliest publish_until of a previous key, or zero.
func (s *State) NextDeadline() time.Time {
	var next time.Time
	for _, r := range s.Keys {
		if r.Phase == keys.PhasePrevious && (next.IsZero() || r.PublishUntil.Before(next)) {
			next = r.PublishUntil
		}
	}
	return next
}

// RotationStep is what scheduled rotation should do next.
type RotationStep struct {
	// Stage a new key now.
	Stage bool
	// Promote this staged key now.
	Promote string
	// At is when to look again when there is nothing to do now; zero when nothing is scheduled.
	At time.Time
}

// NextRotationStep decides scheduled rotation: stage a key when the newest active key has been
// active for every, promote the staged key once it has been published for lead. Pruning is not
// its business: previous keys expire by themselves.
func (s *State) NextRotationStep(now time.Time, every, lead time.Duration) RotationStep {
	if every <= 0 {
		return RotationStep{}
	}
	if st, ok := s.Staged(); ok {
		if at := st.PromotableAt(lead); now.Before(at) {
			return RotationStep{At: at}
		}
		if !st.Promoting.IsZero() && now.Sub(st.Promoting) < promoteTimeout {
			return RotationStep{At: st.Promoting.Add(promoteTimeout)}
		}
		return RotationStep{Promote: st.KID}
	}
	var newest time.Time
	for _, r := range s.Keys {
		if r.Phase == keys.PhaseActive && r.Promoted.After(newest) {
			newest = r.Promoted
		}
	}
	if newest.IsZero() {
		return RotationStep{}
	}
	if due := newest.Add(every); now.Before(due) {
		return RotationStep{At: due}
	}
	return RotationStep{Stage: true}
}

// sort orders records by phase (staged, active, previous), then by kid, so the document is stable.
func (s *State) sort() {
	rank := func(p keys.Phase) int {
		switch p {
		case keys.PhaseStaged:
			return 0
		case keys.PhaseActive:
			return 1
		}
		return 2
	}
	slices.SortFunc(s.Keys, func(a, b Record) int {
		if d := rank(a.Phase) - rank(b.Phase); d != 0 {
			return d
		}
		return strings.Compare(a.KID, b.KID)
	})
}
