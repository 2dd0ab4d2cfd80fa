package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
)

type discoveryDoc struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
}

func checkIssuerURL(_ context.Context, s *state) Result {
	u := s.cfg.IssuerURL
	if err := documents.ValidateIssuerURL(u); err != nil {
		fix := "use the issuer exactly as kube-apiserver's --service-account-issuer names it: https://HOST[/PATH], no query, no trailing slash"
		if strings.HasSuffix(u, "/") {
			fix = "drop the trailing slash here and in kube-apiserver's --service-account-issuer, serve --issuer-url and the IAM provider: all must be byte-identical"
		}
		return fail(ErrRetrieveKey, fix, "%q: %v", u, err)
	}
	return pass("%s", u)
}

func checkDiscovery(ctx context.Context, s *state) Result {
	if err := documents.ValidateIssuerURL(s.cfg.IssuerURL); err != nil {
		return skip("no valid issuer URL")
	}
	u := s.cfg.IssuerURL + documents.DiscoveryPath
	f, err := get(ctx, s.client, u, s.cfg.Timeout)
	if err != nil {
		return fail(ErrRetrieveKey, "make "+u+" reachable over public HTTPS with a certificate from a public CA (or the one --ca-file names): check DNS, the Ingress/load balancer, TLS and that the issuer is running",
			"GET %s: %v", u, err)
	}
	if f.status != http.StatusOK {
		return fail(ErrRetrieveKey, "serve the discovery document at exactly ISSUER_URL"+documents.DiscoveryPath+" (is the issuer URL's path the one serve --issuer-url uses, and does the Ingress route it?)",
			"GET %s: HTTP %d", u, f.status)
	}
	var doc discoveryDoc
	if err := json.Unmarshal(f.body, &doc); err != nil {
		return fail(ErrRetrieveKey, "the URL must serve the issuer's JSON discovery document, not an HTML page from a proxy or login wall",
			"%s is not JSON (Content-Type %q): %v", u, f.header.Get("Content-Type"), err)
	}
	s.discoveryRaw, s.discovery = f.body, &doc
	return pass("%s answered in %s", u, f.duration.Round(time.Millisecond))
}

func checkDiscoveryIssuer(_ context.Context, s *state) Result {
	if s.discovery == nil {
		return skip("no discovery document")
	}
	got, want := s.discovery.Issuer, s.cfg.IssuerURL
	if got != want {
		fix := "make serve --issuer-url, kube-apiserver's --service-account-issuer and the IAM provider URL byte-identical"
		if strings.TrimSuffix(got, "/") == strings.TrimSuffix(want, "/") {
			fix = "remove the trailing slash: " + fix
		}
		return fail(ErrIssuerMismatch, fix, "discovery document says issuer %q, want exactly %q", got, want)
	}
	return pass("issuer %q", got)
}

// jwksURL validates the advertised jwks_uri.
func jwksURL(raw string) error {
	if raw == "" {
		return fmt.Errorf("the discovery document has no jwks_uri")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("jwks_uri %q: %w", raw, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("jwks_uri %q is not an absolute https URL", raw)
	}
	return nil
}
