package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam"
)

// The IAM commands against a real IAM emulator (moto_server) are in integration/iam_test.go; these
// cover what needs no AWS: flag validation before any call, and the printed documents.

// noAWS makes any attempt to reach AWS fail loudly, for tests that must be refused before it.
func noAWS(t *testing.T) {
	t.Setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
	t.Setenv("AWS_ACCESS_KEY_ID", "x")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "x")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
}

func TestIAMCommandsRefuseBeforeCallingAWS(t *testing.T) {
	noAWS(t)
	const tp = "9e99a48a9960b14926bb7f3b02e22da2b0ab7280"
	cases := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"register without URL", []string{"register"}, "--issuer-url is required"},
		{"register with port", []string{"register", "--issuer-url", "https://oidc.example.com:8443", "--thumbprint", tp}, "port"},
		{"register with trailing slash", []string{"register", "--issuer-url", "https://oidc.example.com/", "--thumbprint", tp}, "slash"},
		{"register http", []string{"register", "--issuer-url", "http://oidc.example.com", "--thumbprint", tp}, "scheme"},
		{"register bad thumbprint", []string{"register", "--issuer-url", "https://oidc.example.com", "--thumbprint", "abc"}, "--thumbprint"},
		{"register bad tag", []string{"register", "--issuer-url", "https://oidc.example.com", "--thumbprint", tp, "--tag", "novalue"}, "KEY=VALUE"},
		{"register duplicate audience", []string{"register", "--issuer-url", "https://oidc.example.com", "--thumbprint", tp, "--audience", "a", "--audience", "a"}, "twice"},
		{"register bad jwks uri", []string{"register", "--issuer-url", "https://oidc.example.com", "--jwks-uri", "http://x/jwks", "--thumbprint", tp}, `jwks URI "http://x/jwks" must be an absolute https URL`},
		{"thumbprint of an http URL", []string{"thumbprint", "http://oidc.example.com"}, "https"},
		{"trust-policy without service account", []string{"trust-policy", "--issuer-url", "https://oidc.example.com", "--account-id", "123456789012"}, "--service-account"},
		{"trust-policy bad service account", []string{"trust-policy", "--issuer-url", "https://oidc.example.com", "--account-id", "123456789012", "--service-account", "Default/App"}, "lower-case"},
		{"trust-policy bad account", []string{"trust-policy", "--issuer-url", "https://oidc.example.com", "--account-id", "12", "--service-account", "a/b"}, "12 digits"},
		{"trust-policy bad role", []string{"trust-policy", "--issuer-url", "https://oidc.example.com", "--account-id", "123456789012", "--service-account", "a/b", "--role-name", "a b"}, "--role-name"},
		{"iam-policy bad account", []string{"iam-policy", "--account-id", "abc"}, "--account-id"},
		{"iam-policy bad URL", []string{"iam-policy", "--issuer-url", "https://x.example.com:1"}, "port"},
		{"serve --iam-register with a port", []string{"serve", "--issuer-url", "https://oidc.example.com:8443", "--key-file", rsaTestKey, "--iam-register"}, "port"},
		{"serve --iam-register bad thumbprint", []string{"serve", "--issuer-url", "https://oidc.example.com", "--key-file", rsaTestKey, "--iam-register", "--iam-thumbprint", "zz"}, "--iam-thumbprint"},
		{"serve --iam-interval too short", []string{"serve", "--issuer-url", "https://oidc.example.com", "--key-file", rsaTestKey, "--iam-register", "--iam-interval", "10ms"}, "--iam-interval"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, "", tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "127.0.0.1:1") {
				t.Fatalf("tried to reach AWS or the network: %v", err)
			}
		})
	}
}

func TestIAMPolicyCommand(t *testing.T) {
	out, _, err := run(t, "", "iam-policy", "--issuer-url", "https://oidc.example.com/c", "--account-id", "123456789012", "--partition", "aws-us-gov")
	if err != nil {
		t.Fatal(err)
	}
	var doc iam.PolicyDocument
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if got := doc.Statement[1].Resource[0]; got != "arn:aws-us-gov:iam::123456789012:oidc-provider/oidc.example.com/c" {
		t.Errorf("resource %q", got)
	}
	out, _, err = run(t, "", "iam-policy")
	if err != nil || !strings.Contains(out, `"arn:aws:iam::*:oidc-provider/*"`) {
		t.Errorf("default policy: %v\n%s", err, out)
	}
}

type fakeSTS struct {
	arn, account string
	err          error
	calls        int
}

func (f *fakeSTS) GetCallerIdentity(context.Context, *sts.GetCallerIdentityInput, ...func(*sts.Options)) (*sts.GetCallerIdentityOutput, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	return &sts.GetCallerIdentityOutput{Account: aws.String(f.account), Arn: aws.String(f.arn)}, nil
}

func TestTrustPolicyAccountFromSTS(t *testing.T) {
	cases := []struct {
		name          string
		opts          trustPolicyOptions
		sts           *fakeSTS
		wantPrincipal string
		wantCalls     int
		wantErr       string
		wantHint      []string
	}{
		{
			name:          "account and partition from STS",
			opts:          trustPolicyOptions{issuerURL: "https://oidc.example.com", serviceAccounts: []string{"a/b"}, audiences: []string{"sts.amazonaws.com"}},
			sts:           &fakeSTS{account: "210987654321", arn: "arn:aws-cn:sts::210987654321:assumed-role/admin/me"},
			wantPrincipal: "arn:aws-cn:iam::210987654321:oidc-provider/oidc.example.com",
			wantCalls:     1,
			wantHint:      []string{"kubectl -n a annotate serviceaccount b eks.amazonaws.com/role-arn=arn:aws-cn:iam::210987654321:role/ROLE_NAME"},
		},
		{
			name:          "given account: no STS call",
			opts:          trustPolicyOptions{issuerURL: "https://oidc.example.com", serviceAccounts: []string{"a/b", "ci/*"}, audiences: []string{"vault"}, accountID: "123456789012", roleName: "r"},
			sts:           &fakeSTS{err: errors.New("must not be called")},
			wantPrincipal: "arn:aws:iam::123456789012:oidc-provider/oidc.example.com",
			wantHint: []string{
				"eks.amazonaws.com/audience=vault eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/r",
				"every ServiceAccount matching ci/*",
			},
		},
		{
			name:      "STS fails",
			opts:      trustPolicyOptions{issuerURL: "https://oidc.example.com", serviceAccounts: []string{"a/b"}, audiences: []string{"sts.amazonaws.com"}},
			sts:       &fakeSTS{err: errors.New("no credentials")},
			wantCalls: 1,
			wantErr:   "or give --account-id",
		},
		{
			name:    "everyone warned",
			opts:    trustPolicyOptions{issuerURL: "https://oidc.example.com", serviceAccounts: []string{"*/*"}, audiences: []string{"sts.amazonaws.com"}, accountID: "123456789012"},
			sts:     &fakeSTS{},
			wantErr: "",
			wantHint: []string{
				"warning: */* lets every service account",
			},
			wantPrincipal: "arn:aws:iam::123456789012:oidc-provider/oidc.example.com",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := runTrustPolicy(t.Context(), &stdout, &stderr, tc.opts, func(context.Context) (callerIdentityAPI, error) { return tc.sts, nil })
			if tc.sts.calls != tc.wantCalls {
				t.Errorf("%d STS calls, want %d", tc.sts.calls, tc.wantCalls)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var doc iam.PolicyDocument
			if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
				t.Fatalf("stdout is not only the policy: %v\n%s", err, stdout.String())
			}
			for _, s := range doc.Statement {
				if s.Principal["Federated"] != tc.wantPrincipal {
					t.Errorf("principal %q, want %q", s.Principal["Federated"], tc.wantPrincipal)
				}
			}
			for _, h := range tc.wantHint {
				if !strings.Contains(stderr.String(), h) {
					t.Errorf("stderr lacks %q:\n%s", h, stderr.String())
				}
			}
		})
	}
}

func TestThumbprintTargets(t *testing.T) {
	cases := []struct {
		issuer, jwks string
		want         []string
	}{
		{"https://oidc.example.com/c", "", []string{"https://oidc.example.com"}},
		{"https://oidc.example.com/c", "https://oidc.example.com/c/keys", []string{"https://oidc.example.com"}},
		{"https://oidc.example.com/c", "https://keys.example.com:8443/jwks", []string{"https://keys.example.com:8443", "https://oidc.example.com"}},
	}
	for _, tc := range cases {
		if got := thumbprintTargets(tc.issuer, tc.jwks); !slices.Equal(got, tc.want) {
			t.Errorf("thumbprintTargets(%q, %q) = %v, want %v", tc.issuer, tc.jwks, got, tc.want)
		}
	}
}

func TestIAMPolicyFleet(t *testing.T) {
	out, _, err := run(t, "", "iam-policy", "--issuer-url-template", "https://oidc.example.com/clusters/{namespace}/{cluster}",
		"--account-id", "123456789012", "--fleet-iam-delete-removed")
	if err != nil {
		t.Fatal(err)
	}
	var doc iam.PolicyDocument
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(doc.Statement) != 2 {
		t.Fatalf("statements %+v", doc.Statement)
	}
	st := doc.Statement[1]
	if got, want := []string(st.Resource), []string{"arn:aws:iam::123456789012:oidc-provider/oidc.example.com/clusters/*"}; !slices.Equal(got, want) {
		t.Errorf("resource %v, want %v", got, want)
	}
	if !slices.Contains(st.Action, "iam:DeleteOpenIDConnectProvider") || !slices.Contains(st.Action, "iam:CreateOpenIDConnectProvider") {
		t.Errorf("actions %v", st.Action)
	}
	for _, args := range [][]string{
		{"iam-policy", "--issuer-url-template", "https://oidc.example.com:8443/{cluster}"},
		{"iam-policy", "--issuer-url-template", "https://oidc.example.com/{cluster}", "--issuer-url", "https://oidc.example.com/a"},
		{"iam-policy", "--fleet-iam-delete-removed"},
	} {
		if _, _, err := run(t, "", args...); err == nil {
			t.Errorf("%v succeeded", args)
		}
	}
}
