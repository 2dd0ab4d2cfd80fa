package doctor

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

// tokenInfo is what the token says about itself, before any verification.
type tokenInfo struct {
	kid      string
	hasKID   bool
	alg      string
	issuer   string
	audience []string
	expiry   time.Time
	// notBefore is the later of iat and nbf (zero when the token has neither).
	notBefore time.Time
	parseErr  error
}

// audiences is the aud claim: a string or an array of strings.
type audiences []string

func (a *audiences) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("aud is neither a string nor an array of strings: %w", err)
	}
	*a = many
	return nil
}

// parseToken reads the header and the claims of a compact JWS without verifying it.
func parseToken(raw string) *tokenInfo {
	ti := &tokenInfo{}
	parts := strings.Split(strings.TrimSpace(raw), ".")
	if len(parts) != 3 {
		ti.parseErr = fmt.Errorf("a JWT has 3 dot-separated parts, this has %d", len(parts))
		return ti
	}
	var header struct {
		Alg string  `json:"alg"`
		KID *string `json:"kid"`
	}
	if err := decodePart(parts[0], &header); err != nil {
		ti.parseErr = fmt.Errorf("header: %w", err)
		return ti
	}
	ti.alg = header.Alg
	if header.KID != nil {
		ti.kid, ti.hasKID = *header.KID, true
	}
	var claims struct {
		Iss string    `json:"iss"`
		Aud audiences `json:"aud"`
		Exp *float64  `json:"exp"`
		Iat *float64  `json:"iat"`
		Nbf *float64  `json:"nbf"`
	}
	if err := decodePart(parts[1], &claims); err != nil {
		ti.parseErr = fmt.Errorf("claims: %w", err)
		return ti
	}
	ti.issuer, ti.audience = claims.Iss, claims.Aud
	if claims.Exp != nil {
		ti.expiry = time.Unix(int64(*claims.Exp), 0).UTC()
	}
	for _, c := range []*float64{claims.Iat, claims.Nbf} {
		if c != nil {
			if t := time.Unix(int64(*c), 0).UTC(); t.After(ti.notBefore) {
				ti.notBefore = t
			}
		}
	}
	return ti
}

func decodePart(part string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(part, "="))
	if err != nil {
		return fmt.Errorf("not base64url: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return nil
}

// tokenOrSkip returns the parsed token, or the result to report when there is none to check.
func (s *state) tokenOrSkip() (*tokenInfo, *Result) {
	if s.cfg.Token == "" {
		r := skip("no --token given")
		return nil, &r
	}
	if s.token == nil {
		s.token = parseToken(s.cfg.Token)
	}
	if s.token.parseErr != nil {
		r := fail(ErrMalformed, "pass the token file exactly as the kubelet writes it (a projected token, e.g. /var/run/secrets/eks.amazonaws.com/serviceaccount/token)", "the token does not parse: %v", s.token.parseErr)
		return nil, &r
	}
	return s.token, nil
}

func checkTokenIssuer(_ context.Context, s *state) Result {
	t, r := s.tokenOrSkip()
	if r != nil {
		return *r
	}
	if t.issuer != s.cfg.IssuerURL {
		fix := "set kube-apiserver's first --service-account-issuer to exactly " + s.cfg.IssuerURL + " (the first one signs; list the old one after it to keep old tokens valid), or register the provider for the token's iss"
		if strings.TrimSuffix(t.issuer, "/") == strings.TrimSuffix(s.cfg.IssuerURL, "/") {
			fix = "the two differ only by a trailing slash; " + fix
		}
		return fail(ErrNoProvider+t.issuer, fix, "token iss %q, want exactly %q", t.issuer, s.cfg.IssuerURL)
	}
	return pass("iss %q", t.issuer)
}

func checkTokenKID(_ context.Context, s *state) Result {
	t, r := s.tokenOrSkip()
	if r != nil {
		return *r
	}
	if s.keySet == nil {
		return skip("no usable JWKS")
	}
	if len(s.keySet.Key(t.kid)) > 0 {
		if !t.hasKID || t.kid == "" {
			return pass(`the token has no kid; a key with "kid": "" is published`)
		}
		return pass("kid %s is published", t.kid)
	}
	if !t.hasKID || t.kid == "" {
		return fail(ErrRetrieveKey, `the token has no kid (minted before Kubernetes 1.16 or by a custom signer): run serve with --legacy-empty-kid so each key is also published with "kid": "", or mint a new token`,
			`the token has no kid and no key with "kid": "" is published`)
	}
	return fail(ErrRetrieveKey, "publish the key that signs the tokens: give serve the Secret/file kube-apiserver's --service-account-signing-key-file comes from (after a rotation, the new key must be published before it signs; see docs/operations.md)",
		"kid %s is not in the JWKS (published: %s)", t.kid, strings.Join(kidsOf(s.keySet), ", "))
}

func kidsOf(set *jose.JSONWebKeySet) []string {
	out := make([]string, 0, len(set.Keys))
	for _, k := range set.Keys {
		out = append(out, fmt.Sprintf("%q", k.KeyID))
	}
	return out
}

func checkTokenAudience(_ context.Context, s *state) Result {
	t, r := s.tokenOrSkip()
	if r != nil {
		return *r
	}
	if !slices.Contains(t.audience, s.cfg.Audience) {
		return fail(ErrAudience, "request the token with audience "+s.cfg.Audience+" (serviceAccountToken.audience in the projected volume; the pod-identity webhook uses sts.amazonaws.com), or register the token's audience with register --audience",
			"token aud %q does not include %q", t.audience, s.cfg.Audience)
	}
	return pass("aud %q includes %s", t.audience, s.cfg.Audience)
}

// clockSkewAllowance is how far in the future a token's iat or nbf may lie before it counts as not
// yet valid: the usual OIDC allowance (Kerberos's 5 minutes), which go-oidc and kube-apiserver use too.
const clockSkewAllowance = 5 * time.Minute

func checkTokenExpiry(_ context.Context, s *state) Result {
	t, r := s.tokenOrSkip()
	if r != nil {
		return *r
	}
	now := s.cfg.Now()
	if t.expiry.IsZero() {
		return fail(ErrMalformed, "use a token with an exp claim (TokenRequest / projected tokens always have one)", "the token has no exp")
	}
	if !now.Before(t.expiry) {
		return fail(ErrExpired, "use a fresh token: the kubelet refreshes projected tokens at 80 % of their lifetime, so a pod reading its token file each time never sees this; a token copied out of a pod or a Secret goes stale",
			"expired at %s (%s ago)", t.expiry.Format(time.RFC3339), now.Sub(t.expiry).Round(time.Second))
	}
	if t.notBefore.After(now.Add(clockSkewAllowance)) {
		return fail(ErrNotYetValid, "the clocks disagree: run NTP (chrony, systemd-timesyncd) on the control-plane nodes, and on the machine running doctor",
			"issued for %s, %s ahead of this machine's clock (more than the %s relying parties allow)",
			t.notBefore.Format(time.RFC3339), t.notBefore.Sub(now).Round(time.Second), clockSkewAllowance)
	}
	return pass("expires at %s (in %s)", t.expiry.Format(time.RFC3339), t.expiry.Sub(now).Round(time.Second))
}

func checkTokenSignature(ctx context.Context, s *state) Result {
	t, r := s.tokenOrSkip()
	if r != nil {
		return *r
	}
	if s.keySet == nil {
		return skip("no usable JWKS")
	}
	keys := s.keySet.Key(t.kid)
	if len(keys) == 0 {
		return skip("kid %q is not published", t.kid)
	}
	ks := &oidc.StaticKeySet{}
	var algs []string
	for _, k := range keys {
		ks.PublicKeys = append(ks.PublicKeys, k.Key)
		if k.Algorithm != "" && !slices.Contains(algs, k.Algorithm) {
			algs = append(algs, k.Algorithm)
		}
	}
	if len(algs) == 0 {
		algs = []string{t.alg}
	}
	v := oidc.NewVerifier(s.cfg.IssuerURL, ks, &oidc.Config{
		SkipClientIDCheck:    true, // reported by token-audience
		SkipExpiryCheck:      true, // reported by token-expiry
		SkipIssuerCheck:      true, // reported by token-issuer
		SupportedSigningAlgs: algs,
	})
	if _, err := v.Verify(ctx, strings.TrimSpace(s.cfg.Token)); err != nil {
		return fail(ErrSignature, "the published key under this kid is not the one that signed: the Secret or file serve reads must hold the public half of kube-apiserver's --service-account-signing-key-file",
			"go-oidc: %v", err)
	}
	return pass("%s signature verifies with kid %q", t.alg, t.kid)
}
