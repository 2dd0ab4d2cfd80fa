package doctor

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

func checkJWKSReachable(ctx context.Context, s *state) Result {
	if s.discovery == nil {
		return skip("no discovery document")
	}
	raw := s.discovery.JWKSURI
	if err := jwksURL(raw); err != nil {
		return fail(ErrRetrieveKey, "advertise an https jwks_uri (serve --jwks-uri, or the default ISSUER_URL"+documents.JWKSPath+")", "%v", err)
	}
	s.jwksURI = raw
	f, err := get(ctx, s.client, raw, s.cfg.Timeout)
	if err != nil {
		return fail(ErrRetrieveKey, "make the jwks_uri reachable over public HTTPS within 5 s: check DNS, routing, TLS and the issuer's health", "GET %s: %v", raw, err)
	}
	if f.status != http.StatusOK {
		return fail(ErrRetrieveKey, "serve the JWKS at the advertised jwks_uri (or fix --jwks-uri to where it is served)", "GET %s: HTTP %d", raw, f.status)
	}
	s.jwksRaw, s.jwksFetched = f.body, true
	s.jwksHeader = f.header
	return pass("%s answered in %s", raw, f.duration.Round(time.Millisecond))
}

func checkJWKSContentType(_ context.Context, s *state) Result {
	if !s.jwksFetched {
		return skip("no JWKS")
	}
	ct := s.jwksHeader.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || (mt != documents.JWKSContentType && mt != "application/json") {
		return fail(ErrRetrieveKey, "serve the JWKS as "+documents.JWKSContentType+" (or application/json); a proxy or S3 object with the wrong type breaks strict relying parties",
			"Content-Type %q", ct)
	}
	return pass("Content-Type %s", ct)
}

func checkJWKSCacheable(_ context.Context, s *state) Result {
	if !s.jwksFetched {
		return skip("no JWKS")
	}
	cc := s.jwksHeader.Get("Cache-Control")
	for _, d := range strings.Split(strings.ToLower(cc), ",") {
		switch strings.TrimSpace(d) {
		case "no-store", "no-cache":
			return fail(ErrRetrieveKey, "serve the JWKS cacheable (Cache-Control: public, max-age=3600, what serve and mirror set): AWS advises against no-store/no-cache; a CDN or proxy in front may be rewriting the header",
				"Cache-Control %q forbids caching", cc)
		}
	}
	if cc == "" {
		return pass("no Cache-Control (cacheable by default)")
	}
	return pass("Cache-Control %s", cc)
}

func checkJWKSKeys(_ context.Context, s *state) Result {
	if !s.jwksFetched {
		return skip("no JWKS")
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(s.jwksRaw, &set); err != nil {
		return fail(ErrRetrieveKey, "serve a JSON Web Key Set ({\"keys\":[...]}) at the jwks_uri", "the JWKS does not parse: %v", err)
	}
	if len(set.Keys) == 0 {
		return fail(ErrRetrieveKey, "publish the cluster's verification keys: check serve's --secret/--key-file sources (/readyz on the internal listener says why none are published)", "the JWKS has no keys")
	}
	var problems []string
	for i, k := range set.Keys {
		var missing []string
		if k.KeyID == "" && !hasTwinWithKID(set.Keys, k) {
			missing = append(missing, "kid")
		}
		if k.Algorithm == "" {
			missing = append(missing, "alg")
		}
		if k.Use != "sig" {
			missing = append(missing, `use "sig"`)
		}
		if !k.Valid() || !k.IsPublic() {
			missing = append(missing, "a valid public key")
		}
		if len(missing) > 0 {
			problems = append(problems, fmt.Sprintf("key %d (kid %q) lacks %s", i, k.KeyID, strings.Join(missing, ", ")))
		}
	}
	s.keySet = &set
	if n := len(set.Keys); n > keys.AWSMaxJWKSKeys {
		// Checked first: with this many keys STS fails whatever else is right. The set stays in
		// s.keySet so that the token checks still say whether the token's key is among them.
		detail := fmt.Sprintf("%d keys, more than the %d AWS STS accepts in one JWKS: STS then cannot find the token's kid in it", n, keys.AWSMaxJWKSKeys)
		if len(problems) > 0 {
			detail += "; also " + strings.Join(problems, "; ")
		}
		return fail(ErrRetrieveKey, fmt.Sprintf("publish at most %d keys: remove keys no longer needed from the key sources (old entries of a verification bundle, keys retired through `keys retire`); serve --legacy-empty-kid publishes every key twice, so drop it once no token without kid is in use. serve warns in its log and kube_oidc_issuer_keyset_keys shows the count", keys.AWSMaxJWKSKeys),
			"%s", detail)
	}
	if len(problems) > 0 {
		return fail(ErrRetrieveKey, "publish every key with kid, alg and use \"sig\" (what serve renders); a hand-made JWKS needs them too",
			"%s", strings.Join(problems, "; "))
	}
	kids := make([]string, len(set.Keys))
	for i, k := range set.Keys {
		kids[i] = k.KeyID
	}
	return pass("%d key(s): %s", len(set.Keys), strings.Join(kids, ", "))
}

// hasTwinWithKID reports whether the same public key is also published with a kid: serve
// --legacy-empty-kid publishes each key twice, once with "kid": "", for tokens without a kid.
func hasTwinWithKID(all []jose.JSONWebKey, k jose.JSONWebKey) bool {
	want, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return false
	}
	for _, o := range all {
		if o.KeyID == "" {
			continue
		}
		if got, err := o.Thumbprint(crypto.SHA256); err == nil && string(got) == string(want) {
			return true
		}
	}
	return false
}
