package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authenticationv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationv1client "k8s.io/client-go/kubernetes/typed/authorization/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/boundedread"
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
//
// The file is checked again before each comparison (a stat; admin requests are rare) and re-read
// when it changed, so the token rotates without a restart — also when it is a mounted Secret,
// whose update swaps a symlink. A replacement that cannot be used (unreadable, too short) is logged
// and the previous token stays in force: an operator's typo must not lock out every holder, nor
// open the API.
type StaticToken struct {
	path   string
	logger *slog.Logger

	mu    sync.Mutex
	sum   [sha256.Size]byte
	stamp fileStamp
}

// fileStamp tells whether a file changed since it was read.
type fileStamp struct {
	modTime time.Time
	size    int64
	inode   uint64
}

func stampOf(fi os.FileInfo) fileStamp {
	st := fileStamp{modTime: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.inode = sys.Ino
	}
	return st
}

// LoadStaticToken reads the token from path (surrounding whitespace is ignored). It refuses a
// token shorter than 16 bytes. logger (may be nil) hears of reloads, never of the token.
func LoadStaticToken(path string, logger *slog.Logger) (*StaticToken, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("reading admin token file: %w", err)
	}
	sum, err := readStaticToken(path)
	if err != nil {
		return nil, err
	}
	return &StaticToken{path: path, logger: logger, sum: sum, stamp: stampOf(fi)}, nil
}

func readStaticToken(path string) ([sha256.Size]byte, error) {
	b, err := boundedread.ReadFile(path, 64<<10)
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("reading admin token file: %w", err)
	}
	tok := bytes.TrimSpace(b)
	if len(tok) < 16 {
		return [sha256.Size]byte{}, fmt.Errorf("admin token file %s: the token must be at least 16 bytes", path)
	}
	return sha256.Sum256(tok), nil
}

// Matches compares token with the configured one in constant time (over their SHA-256 digests, so
// the comparison takes the same time whatever the length).
func (s *StaticToken) Matches(token string) bool {
	want := s.current()
	got := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// current returns the digest of the token in force, re-reading the file when it changed.
func (s *StaticToken) current() [sha256.Size]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Stat(s.path)
	if err != nil {
		// Gone for a moment (an editor's save, a Secret update in progress) or for good: keep the
		// token in force rather than lock everybody out; say so once per change.
		if s.stamp != (fileStamp{}) {
			s.logger.Warn("admin token file unreadable; the previous token stays in force", "file", s.path, "error", err)
			s.stamp = fileStamp{}
		}
		return s.sum
	}
	st := stampOf(fi)
	if st == s.stamp {
		return s.sum
	}
	s.stamp = st
	sum, err := readStaticToken(s.path)
	if err != nil {
		s.logger.Warn("admin token file changed but cannot be used; the previous token stays in force", "file", s.path, "error", err)
		return s.sum
	}
	if sum != s.sum {
		s.sum = sum
		s.logger.Info("admin token file reloaded: a new static token is in force", "file", s.path)
	}
	return s.sum
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
	// An authenticator that ignores audiences may still say yes; the audiences it vouches for are
	// the ones that count (as kube-apiserver's own webhook token authenticator checks them).
	if len(k.Audiences) > 0 && !slices.ContainsFunc(tr.Status.Audiences, func(a string) bool { return slices.Contains(k.Audiences, a) }) {
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
