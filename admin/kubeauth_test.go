package admin

import (
	"context"
	"errors"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// The audience-aware service-account authenticator is covered against the real kube-apiserver
// (integration TestAdminTokenAudience). This covers what only an audience-unaware authenticator
// (a webhook, OIDC) can produce: authenticated, but vouching for other audiences.
func TestKubeAuthRequiresAnAudienceTheReviewVouchesFor(t *testing.T) {
	cases := []struct {
		name       string
		required   []string
		authed     bool
		vouchedFor []string
		wantErr    error
	}{
		{"no audience required", nil, true, nil, nil},
		{"required audience vouched for", []string{"koi"}, true, []string{"koi"}, nil},
		{"one of several vouched for", []string{"other", "koi"}, true, []string{"api", "koi"}, nil},
		{"authenticated for other audiences only", []string{"koi"}, true, []string{"api"}, ErrUnauthenticated},
		{"authenticated without audiences", []string{"koi"}, true, nil, ErrUnauthenticated},
		{"not authenticated", []string{"koi"}, false, []string{"koi"}, ErrUnauthenticated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewClientset()
			var asked []string
			cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
				tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
				asked = tr.Spec.Audiences
				tr.Status = authenticationv1.TokenReviewStatus{
					Authenticated: tc.authed,
					Audiences:     tc.vouchedFor,
					User:          authenticationv1.UserInfo{Username: "alice"},
				}
				return true, tr, nil
			})
			k := &KubeAuth{TokenReviews: cs.AuthenticationV1(), SubjectAccessReviews: cs.AuthorizationV1(), Audiences: tc.required}
			u, err := k.Authenticate(context.Background(), "token")
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if len(asked) != len(tc.required) {
				t.Errorf("TokenReview asked for audiences %v, want %v", asked, tc.required)
			}
			if err == nil && u.Name != "alice" {
				t.Errorf("user %+v", u)
			}
		})
	}
}
