package signingprobe

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/boundedread"
)

// Audience is the only audience of probe tokens: no relying party accepts it, so a probe token that
// leaked anyway would be useless.
const Audience = "kube-oidc-issuer.signing-probe"

// MinExpirationSeconds is the shortest lifetime the TokenRequest API grants (10 minutes).
const MinExpirationSeconds = 600

// TokenRequester mints probe tokens for one ServiceAccount through the TokenRequest API.
type TokenRequester struct {
	Client    corev1client.ServiceAccountsGetter
	Namespace string
	Name      string
}

// Mint asks the API server for a token of the ServiceAccount with the probe audience and the
// shortest lifetime the API allows. The token is returned to the caller only to read its header.
func (r TokenRequester) Mint(ctx context.Context) (string, error) {
	exp := int64(MinExpirationSeconds)
	tr, err := r.Client.ServiceAccounts(r.Namespace).CreateToken(ctx, r.Name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{Audience}, ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting a token for ServiceAccount %s/%s: %w", r.Namespace, r.Name, err)
	}
	return tr.Status.Token, nil
}

// String names the ServiceAccount.
func (r TokenRequester) String() string { return r.Namespace + "/" + r.Name }

// FreshConnections returns a copy of cfg whose every request goes over a new connection (HTTP/1.1,
// closed after the response). Several kube-apiservers behind one load-balanced endpoint sign with
// different keys during a control-plane roll; a long-lived connection (client-go's default, with
// HTTP/2 multiplexing everything over one) would only ever reach one of them.
func FreshConnections(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.NextProtos = []string{"http/1.1"}
	c.Wrap(func(rt http.RoundTripper) http.RoundTripper { return closingTransport{rt} })
	return c
}

type closingTransport struct{ next http.RoundTripper }

func (t closingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Close = true
	return t.next.RoundTrip(req)
}

// Failure classes of a probe, for the metric's result label and for what the operator is told.
const (
	ResultOK          = "ok"
	ResultForbidden   = "forbidden"   // no RBAC for serviceaccounts/token
	ResultNotFound    = "not_found"   // the ServiceAccount does not exist
	ResultUnreachable = "unreachable" // the API server did not answer
	ResultBadToken    = "bad_token"   // the answer was not a token whose header names a key
	ResultError       = "error"       // anything else the API server refused
)

// Classify labels a probe error with its result class (ResultForbidden, ResultUnreachable, ...).
func Classify(err error) string {
	r, _ := classify(err)
	return r
}

// classify maps a probe error to a result class and a hint for the operator.
func classify(err error) (result, hint string) {
	switch {
	case err == nil:
		return ResultOK, ""
	case apierrors.IsForbidden(err):
		return ResultForbidden, "grant create on serviceaccounts/token for exactly the probe ServiceAccount (resourceNames) to the issuer"
	case apierrors.IsNotFound(err):
		return ResultNotFound, "create the probe ServiceAccount or point --signing-probe-service-account at an existing one"
	case errors.Is(err, ErrUnreadableToken):
		return ResultBadToken, "the API server answered with a token the probe cannot read"
	case apierrors.IsUnauthorized(err):
		return ResultError, "the issuer's own credentials were refused"
	case apierrors.ReasonForError(err) != metav1.StatusReasonUnknown:
		return ResultError, ""
	}
	return ResultUnreachable, "the API server did not answer"
}

// ErrUnreadableToken wraps the reason an answer to a probe was not a token whose header names a
// key.
var ErrUnreadableToken = errors.New("unreadable probe token")

// inClusterTokenFile is where a pod finds its own ServiceAccount token.
const inClusterTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// OwnServiceAccount returns NAMESPACE/NAME of the ServiceAccount the process runs as in a pod,
// read from the subject of its projected token ("system:serviceaccount:NS:NAME"); ok is false
// outside a pod.
func OwnServiceAccount() (string, bool) {
	return ownServiceAccount(inClusterTokenFile)
}

func ownServiceAccount(tokenFile string) (string, bool) {
	raw, err := boundedread.ReadFile(tokenFile, 16<<10)
	if err != nil {
		return "", false
	}
	sub, err := subject(strings.TrimSpace(string(raw)))
	if err != nil {
		return "", false
	}
	rest, ok := strings.CutPrefix(sub, "system:serviceaccount:")
	if !ok {
		return "", false
	}
	ns, name, ok := strings.Cut(rest, ":")
	if !ok || ns == "" || name == "" {
		return "", false
	}
	return ns + "/" + name, true
}
