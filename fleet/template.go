package fleet

import (
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
)

// Placeholders of an issuer URL template.
const (
	ClusterPlaceholder   = "{cluster}"
	NamespacePlaceholder = "{namespace}"
)

// URLTemplate maps a cluster to its issuer URL, e.g. https://oidc.example.com/clusters/{cluster}.
type URLTemplate struct {
	raw          string
	hasNamespace bool
}

// ParseURLTemplate checks a template: it must hold {cluster}, may hold {namespace}, nothing else in
// braces, and every URL it renders for valid names must be a valid issuer URL. The names are
// DNS-1123 labels, so they never add a slash, a dot segment or anything a client would escape.
func ParseURLTemplate(raw string) (URLTemplate, error) {
	if !strings.Contains(raw, ClusterPlaceholder) {
		return URLTemplate{}, fmt.Errorf("issuer URL template %q: it must contain %s, or every cluster would get the same issuer", raw, ClusterPlaceholder)
	}
	rest := strings.ReplaceAll(strings.ReplaceAll(raw, ClusterPlaceholder, ""), NamespacePlaceholder, "")
	if strings.ContainsAny(rest, "{}") {
		return URLTemplate{}, fmt.Errorf("issuer URL template %q: only %s and %s may appear in braces", raw, ClusterPlaceholder, NamespacePlaceholder)
	}
	t := URLTemplate{raw: raw, hasNamespace: strings.Contains(raw, NamespacePlaceholder)}
	// A sample rendering catches the template's own problems (scheme, trailing slash, query...).
	if err := documents.ValidateIssuerURL(t.expand("ns", "cluster")); err != nil {
		return URLTemplate{}, fmt.Errorf("issuer URL template %q renders invalid issuer URLs: %w", raw, err)
	}
	if strings.Contains(strings.SplitN(strings.TrimPrefix(raw, "https://"), "/", 2)[0], "{") {
		// The host would then vary per cluster: one TLS certificate, one IAM thumbprint and one
		// DNS name per cluster, which is not what one fleet service can offer.
		return URLTemplate{}, fmt.Errorf("issuer URL template %q: placeholders belong in the path, not the host", raw)
	}
	return t, nil
}

// StaticPrefix is the template up to its first placeholder: every cluster's issuer URL starts
// with it (an IAM policy's resource pattern, for one).
func (t URLTemplate) StaticPrefix() string {
	return t.raw[:strings.IndexByte(t.raw, '{')]
}

// String is the template as given.
func (t URLTemplate) String() string { return t.raw }

// HasNamespace tells whether clusters of the same name in two namespaces get different URLs.
func (t URLTemplate) HasNamespace() bool { return t.hasNamespace }

func (t URLTemplate) expand(namespace, cluster string) string {
	return strings.ReplaceAll(strings.ReplaceAll(t.raw, ClusterPlaceholder, cluster), NamespacePlaceholder, namespace)
}

// errBadName marks a cluster or namespace name that cannot be placed in an issuer URL.
var errBadName = errors.New("not a DNS-1123 label")

// Expand is the issuer URL of cluster in namespace. Names that are not DNS-1123 labels are refused:
// anything else could change the URL's shape (a slash, a dot segment, an escape).
func (t URLTemplate) Expand(namespace, cluster string) (string, error) {
	if errs := validation.IsDNS1123Label(cluster); len(errs) > 0 {
		return "", fmt.Errorf("cluster name %q is %w (%s)", cluster, errBadName, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(namespace); t.hasNamespace && len(errs) > 0 {
		return "", fmt.Errorf("namespace %q is %w (%s)", namespace, errBadName, strings.Join(errs, "; "))
	}
	u := t.expand(namespace, cluster)
	if err := documents.ValidateIssuerURL(u); err != nil {
		return "", err
	}
	return u, nil
}
