package lifecycle

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// DocumentVersion is the version of the state document this package reads and writes.
const DocumentVersion = 1

// maxDocumentSize bounds what ParseDocument reads; a Secret holds at most 1 MiB anyway.
const maxDocumentSize = 1 << 20

// document is the JSON form of State:
//
//	{"version": 1, "signingSecret": "NS/NAME", "keys": [{"kid": "...", "phase": "staged",
//	  "algorithm": "RS256", "publicKey": "-----BEGIN PUBLIC KEY-----...", "privateKey": "...",
//	  "created": "2026-...Z", "promoted": ..., "retired": ..., "publishUntil": ..., "promoting": ...,
//	  "lastSigned": ...}], "signing": {"observedAt": "2026-...Z", "kids": ["..."]}}
//
// Times are RFC 3339 in UTC; absent times are omitted. privateKey appears on staged keys only.
type document struct {
	Version       int    `json:"version"`
	SigningSecret string `json:"signingSecret,omitempty"`
	// Signer-mode documents only (see State.Signer).
	Signer      bool        `json:"signer,omitempty"`
	ID          string      `json:"id,omitempty"`
	Generation  int64       `json:"generation,omitempty"`
	KeysChanged time.Time   `json:"keysChanged,omitzero"`
	Keys        []docRecord `json:"keys"`
	Signing     *docSigning `json:"signing,omitempty"`
}

// docSigning is the latest persisted signing observation: {"observedAt": ..., "kids": [...]}.
type docSigning struct {
	ObservedAt time.Time `json:"observedAt"`
	KIDs       []string  `json:"kids"`
}

// Bounds of a signing observation: a probe round sees a handful of kids (one per kube-apiserver
// key during a roll), each a kube-apiserver kid (43 characters) or at most KEP-740's 1024.
const (
	maxSigningKIDs   = 16
	maxSigningKIDLen = 1024
)

type docRecord struct {
	KID          string     `json:"kid"`
	Phase        keys.Phase `json:"phase"`
	Algorithm    string     `json:"algorithm"`
	PublicKey    string     `json:"publicKey"`
	PrivateKey   string     `json:"privateKey,omitempty"`
	KMSKey       string     `json:"kmsKey,omitempty"`
	Created      time.Time  `json:"created"`
	Promoted     time.Time  `json:"promoted,omitzero"`
	Retired      time.Time  `json:"retired,omitzero"`
	PublishUntil time.Time  `json:"publishUntil,omitzero"`
	Promoting    time.Time  `json:"promoting,omitzero"`
	LastSigned   time.Time  `json:"lastSigned,omitzero"`
}

// ParseDocument parses and validates a state document. Empty input is the empty state (a state
// Secret created ahead of time by an operator). It rejects, with an error that never quotes key
// material: another version, unknown fields, a phase other than staged/active/previous, a public
// key whose kid or algorithm does not match, a private key on anything but a staged key or one
// that does not match its public key, a previous key without publish_until, duplicate kids, and
// more than one staged key.
func ParseDocument(data []byte) (*State, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return &State{}, nil
	}
	if len(data) > maxDocumentSize {
		return nil, fmt.Errorf("state document is %d bytes, more than %d", len(data), maxDocumentSize)
	}
	var probe struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("state document is not JSON: %w", jsonError(err))
	}
	switch {
	case probe.Version == nil:
		return nil, errors.New("state document has no version")
	case *probe.Version > DocumentVersion:
		return nil, fmt.Errorf("state document has version %d, written by a newer kube-oidc-issuer (this one reads version %d): upgrade every replica", *probe.Version, DocumentVersion)
	case *probe.Version != DocumentVersion:
		return nil, fmt.Errorf("state document has unsupported version %d", *probe.Version)
	}
	var doc document
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("state document does not parse: %w", jsonError(err))
	}
	if dec.More() {
		return nil, errors.New("state document has trailing data")
	}
	s := &State{SigningSecret: doc.SigningSecret, Keys: make([]Record, 0, len(doc.Keys)),
		Signer: doc.Signer, ID: doc.ID, Generation: doc.Generation, KeysChanged: doc.KeysChanged}
	if doc.Signing != nil {
		obs, err := signingFromDoc(*doc.Signing)
		if err != nil {
			return nil, fmt.Errorf("state document signing observation: %w", err)
		}
		s.Signing = obs
	}
	for i, d := range doc.Keys {
		r, err := recordFromDoc(d, doc.Signer)
		if err != nil {
			return nil, fmt.Errorf("state document key %d (%q): %w", i+1, truncate(d.KID, 64), err)
		}
		s.Keys = append(s.Keys, r)
	}
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("state document: %w", err)
	}
	s.sort()
	return s, nil
}

// jsonError reduces encoding/json's errors to a position or a field name, so that no error quotes
// the document (which may hold private keys).
func jsonError(err error) error {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Errorf("syntax error at byte %d", syn.Offset)
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return fmt.Errorf("field %s: wrong type %s", typ.Field, typ.Value)
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func signingFromDoc(d docSigning) (SigningObservation, error) {
	if d.ObservedAt.IsZero() {
		return SigningObservation{}, errors.New("no observedAt")
	}
	if len(d.KIDs) == 0 || len(d.KIDs) > maxSigningKIDs {
		return SigningObservation{}, fmt.Errorf("%d kids, want 1 to %d", len(d.KIDs), maxSigningKIDs)
	}
	for _, kid := range d.KIDs {
		if kid == "" || len(kid) > maxSigningKIDLen {
			return SigningObservation{}, fmt.Errorf("a kid of %d bytes, want 1 to %d", len(kid), maxSigningKIDLen)
		}
	}
	kids := slices.Clone(d.KIDs)
	slices.Sort(kids)
	if len(slices.Compact(kids)) != len(d.KIDs) {
		return SigningObservation{}, errors.New("duplicate kids")
	}
	return SigningObservation{At: d.ObservedAt, KIDs: kids}, nil
}

func recordFromDoc(d docRecord, signerMode bool) (Record, error) {
	switch d.Phase {
	case keys.PhaseStaged, keys.PhaseActive, keys.PhasePrevious:
	default:
		return Record{}, fmt.Errorf("phase %q: want staged, active or previous", truncate(string(d.Phase), 32))
	}
	if b, _ := pem.Decode([]byte(d.PublicKey)); b == nil || b.Type != "PUBLIC KEY" {
		return Record{}, errors.New("publicKey must be one PUBLIC KEY PEM block")
	}
	pubs, err := keys.ParsePEM("publicKey", []byte(d.PublicKey))
	if err != nil {
		return Record{}, err
	}
	if len(pubs) != 1 {
		return Record{}, fmt.Errorf("publicKey holds %d keys, want 1", len(pubs))
	}
	pub := pubs[0]
	if pub.KeyID() != d.KID {
		return Record{}, fmt.Errorf("kid does not match the public key (its kid is %s)", pub.KeyID())
	}
	if pub.Algorithm() != d.Algorithm {
		return Record{}, fmt.Errorf("algorithm %q does not match the public key (%s)", truncate(d.Algorithm, 16), pub.Algorithm())
	}
	if d.Created.IsZero() {
		return Record{}, errors.New("no created time")
	}
	r := Record{
		KID: d.KID, Phase: d.Phase, Algorithm: d.Algorithm, Public: pub,
		Created: d.Created, Promoted: d.Promoted, Retired: d.Retired, PublishUntil: d.PublishUntil, Promoting: d.Promoting,
		LastSigned: d.LastSigned, KMSKey: d.KMSKey,
	}
	if d.KMSKey != "" {
		if !signerMode {
			return Record{}, errors.New("kmsKey belongs to signer-mode states only")
		}
		if d.PrivateKey != "" {
			return Record{}, errors.New("a key held in KMS must not carry a private key")
		}
		if err := validKMSKeyARN(d.KMSKey); err != nil {
			return Record{}, err
		}
	}
	if d.PrivateKey != "" {
		switch {
		case d.Phase == keys.PhaseStaged:
		case d.Phase == keys.PhaseActive && signerMode:
		case signerMode:
			return Record{}, fmt.Errorf("a %s key must not carry a private key (only staged and active keys do in a signer-mode state)", d.Phase)
		default:
			return Record{}, fmt.Errorf("a %s key must not carry a private key (only staged keys do)", d.Phase)
		}
		signer, err := parsePrivateKey([]byte(d.PrivateKey))
		if err != nil {
			return Record{}, fmt.Errorf("privateKey: %w", err)
		}
		if !pub.Equal(mustPublic(signer)) {
			return Record{}, errors.New("privateKey does not match publicKey")
		}
		r.private = secretPEM(d.PrivateKey)
	}
	switch d.Phase {
	case keys.PhaseStaged:
		if len(r.private) == 0 && r.KMSKey == "" {
			return Record{}, errors.New("a staged key needs its private key (or, in a signer-mode state, a KMS key)")
		}
	case keys.PhaseActive:
		if signerMode && len(r.private) == 0 && r.KMSKey == "" {
			return Record{}, errors.New("the active key of a signer-mode state needs its private key or a KMS key")
		}
	case keys.PhasePrevious:
		if d.PublishUntil.IsZero() {
			return Record{}, errors.New("a previous key needs publishUntil")
		}
	}
	return r, nil
}

func (s *State) validate() error {
	seen := map[string]bool{}
	staged := 0
	for _, r := range s.Keys {
		if seen[r.KID] {
			return fmt.Errorf("key %s appears twice", r.KID)
		}
		seen[r.KID] = true
		if r.Phase == keys.PhaseStaged {
			staged++
		}
	}
	if staged > 1 {
		return fmt.Errorf("%d staged keys; at most one may be staged", staged)
	}
	if s.Signer {
		return s.validateSigner()
	}
	if s.ID != "" || s.Generation != 0 || !s.KeysChanged.IsZero() {
		return errors.New("id, generation and keysChanged belong to signer-mode states only")
	}
	return nil
}

// validateSigner checks what a signer-mode state adds: an identity, exactly one active key, and
// private keys on the staged and active keys only (a previous key never signs again).
func (s *State) validateSigner() error {
	if s.SigningSecret != "" {
		return errors.New("a signer-mode state follows no signing-key Secret")
	}
	if !validStateID(s.ID) {
		return errors.New("a signer-mode state needs an id of 16 to 64 letters, digits or dashes")
	}
	if s.Generation < 1 {
		return errors.New("a signer-mode state needs a generation of at least 1")
	}
	active := 0
	for _, r := range s.Keys {
		switch r.Phase {
		case keys.PhaseActive:
			active++
			if !r.CanSign() {
				return fmt.Errorf("active key %s has no private key and no KMS key", r.KID)
			}
		case keys.PhaseStaged:
			if !r.CanSign() {
				return fmt.Errorf("staged key %s has no private key and no KMS key", r.KID)
			}
		default:
			if len(r.private) != 0 {
				return fmt.Errorf("%s key %s carries a private key", r.Phase, r.KID)
			}
		}
	}
	if active != 1 {
		return fmt.Errorf("%d active keys; a signer-mode state signs with exactly one", active)
	}
	return nil
}

func validStateID(id string) bool {
	if len(id) < 16 || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// MarshalDocument renders the state document. It is the only place private keys are serialised.
func MarshalDocument(s *State) ([]byte, error) {
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("refusing to write an invalid state: %w", err)
	}
	doc := document{Version: DocumentVersion, SigningSecret: s.SigningSecret, Keys: make([]docRecord, 0, len(s.Keys)),
		Signer: s.Signer, ID: s.ID, Generation: s.Generation, KeysChanged: utc(s.KeysChanged)}
	for _, r := range s.Keys {
		doc.Keys = append(doc.Keys, docRecord{
			KID: r.KID, Phase: r.Phase, Algorithm: r.Algorithm, PublicKey: string(r.Public.PEM()),
			PrivateKey: string(r.private),
			Created:    utc(r.Created), Promoted: utc(r.Promoted), Retired: utc(r.Retired),
			PublishUntil: utc(r.PublishUntil), Promoting: utc(r.Promoting), LastSigned: utc(r.LastSigned),
			KMSKey: r.KMSKey,
		})
	}
	if !s.Signing.At.IsZero() {
		doc.Signing = &docSigning{ObservedAt: utc(s.Signing.At), KIDs: slices.Clone(s.Signing.KIDs)}
		slices.Sort(doc.Signing.KIDs)
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding state document: %w", err)
	}
	return append(b, '\n'), nil
}

// utc drops the monotonic reading and the location, so a time survives a round trip unchanged.
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Round(0)
}

// parsePrivateKey reads one PEM private key (PKCS #1, SEC 1 or PKCS #8; RSA or ECDSA). Errors never
// quote the input.
func parsePrivateKey(data []byte) (crypto.Signer, error) {
	b, rest := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("more than one PEM block")
	}
	var (
		key any
		err error
	)
	switch b.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	default:
		return nil, errors.New("not an RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY block")
	}
	if err != nil {
		return nil, errors.New("malformed private key")
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	}
	return nil, errors.New("only RSA and ECDSA private keys are supported")
}

// mustPublic is the keys.PublicKey of a signer; a zero key (which equals nothing) if unusable.
func mustPublic(s crypto.Signer) keys.PublicKey {
	k, err := keys.NewPublicKey(s.Public())
	if err != nil {
		return keys.PublicKey{}
	}
	return k
}
