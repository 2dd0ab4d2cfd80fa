package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authenticationv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationv1client "k8s.io/client-go/kubernetes/typed/authorization/v1"
)

// User is an authenticated caller.
type User struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string][]string
	// Via says how the caller was authenticated: "tokenreview" or "token-file".
	Via string
	// Privileged callers (the static token) skip authorization.
	Privileged bool
}

// ErrUnauthenticated: the token is unknown, invalid or expired.
var ErrUnauthenticated = errors.New("unauthenticated")

// Authenticator maps a bearer token to a user, or ErrUnauthenticated. Other errors mean the
// decision could not be made (the API server is unreachable).
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (User, error)
}

// Authorizer decides whether user may use verb on path. reason explains a denial.
type Authorizer interface {
	Authorize(ctx context.Context, u User, verb, path string) (allowed bool, reason string, err error)
}

// StaticToken authenticates one token read from a file, compared in constant time. It is meant for
// use outside a cluster; its holder may do everything.
type StaticToken struct {
	sum [sha256.Size]byte
}

// LoadStaticToken reads the token from path (surrounding whitespace is ignored). It refuses a
// token shorter than 16 bytes.
func LoadStaticToken(path string) (*StaticToken, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading admin token file: %w", err)
	}
	tok := bytes.TrimSpace(b)
	if len(tok) < 16 {
		return nil, fmt.Errorf("admin token file %s: the token must be at least 16 bytes", path)
	}
	return &StaticToken{sum: sha256.Sum256(tok)}, nil
}

// Matches compares token with the configured one in constant time (over their SHA-256 digests, so
// the comparison takes the same time whatever the length).
func (s *StaticToken) Matches(token string) bool {
	got := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(got[:], s.sum[:]) == 1
}

// KubeAuth authenticates with a TokenReview and authorizes with a SubjectAccessReview, through
// the typed authentication/v1 and authorization/v1 clients. The issuer's service account needs
// create on tokenreviews and subjectaccessreviews (the system:auth-delegator ClusterRole).
type KubeAuth struct {
	TokenReviews         authenticationv1client.TokenReviewsGetter
	SubjectAccessReviews authorizationv1client.SubjectAccessReviewsGetter
	// Audiences, when set, are required of the token; empty means the API server's own audiences.
	Audiences []string
}

// Authenticate implements Authenticator.
func (k *KubeAuth) Authenticate(ctx context.Context, token string) (User, error) {
	tr, err := k.TokenReviews.TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: k.Audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return User{}, fmt.Errorf("TokenReview: %w", err)
	}
	if !tr.Status.Authenticated {
		return User{}, ErrUnauthenticated
	}
	u := User{Name: tr.Status.User.Username, UID: tr.Status.User.UID, Groups: tr.Status.User.Groups, Via: "tokenreview"}
	if len(tr.Status.User.Extra) > 0 {
		u.Extra = make(map[string][]string, len(tr.Status.User.Extra))
		for k, v := range tr.Status.User.Extra {
			u.Extra[k] = v
		}
	}
	return u, nil
}

// Authorize implements Authorizer.
func (k *KubeAuth) Authorize(ctx context.Context, u User, verb, path string) (bool, string, error) {
	extra := make(map[string]authorizationv1.ExtraValue, len(u.Extra))
	for k, v := range u.Extra {
		extra[k] = v
	}
	sar, err := k.SubjectAccessReviews.SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: u.Name, UID: u.UID, Groups: u.Groups, Extra: extra,
			NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: path, Verb: verb},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, "", fmt.Errorf("SubjectAccessReview: %w", err)
	}
	return sar.Status.Allowed && !sar.Status.Denied, sar.Status.Reason, nil
}

// chain authenticates with the static token first (when configured), then with next.
type chain struct {
	static *StaticToken
	next   Authenticator
}

func (c chain) Authenticate(ctx context.Context, token string) (User, error) {
	if c.static != nil && c.static.Matches(token) {
		return User{Name: "admin-token-file", Via: "token-file", Privileged: true}, nil
	}
	if c.next == nil {
		return User{}, ErrUnauthenticated
	}
	return c.next.Authenticate(ctx, token)
}
