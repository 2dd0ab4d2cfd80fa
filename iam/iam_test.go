package iam

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
)

func TestValidateProviderURL(t *testing.T) {
	long := "https://oidc.example.com/" + strings.Repeat("a", 231)
	tests := []struct {
		url     string
		wantErr string // empty: valid; "issuer rules": exactly documents.ValidateIssuerURL's error
	}{
		{url: "https://oidc.example.com"},
		{url: "https://oidc.example.com/clusters/prod-1"},
		{url: "https://s3.eu-west-1.amazonaws.com/my-bucket"},
		{url: "https://oidc.example.com/" + strings.Repeat("a", 230)}, // exactly 255
		// IAM's own rules, on top of the issuer rules.
		{url: "https://oidc.example.com:8443/x",
			wantErr: `issuer URL "https://oidc.example.com:8443/x": it names port 8443: AWS IAM refuses an OpenID Connect provider URL with a port (STS fetches from port 443); serve the issuer on port 443 (an Ingress or load balancer in front) and use "https://oidc.example.com/x"`},
		{url: "https://[::1]:8443",
			wantErr: `issuer URL "https://[::1]:8443": it names port 8443: AWS IAM refuses an OpenID Connect provider URL with a port (STS fetches from port 443); serve the issuer on port 443 (an Ingress or load balancer in front) and use "https://[::1]"`},
		{url: long,
			wantErr: `issuer URL "` + long + `": it is 256 characters long: AWS IAM allows at most 255 in an OpenID Connect provider URL; use a shorter host or path`},
		// The issuer rules come first, with their own message.
		{url: "http://oidc.example.com", wantErr: "issuer rules"},
		{url: "HTTPS://oidc.example.com", wantErr: "issuer rules"},
		{url: "https://oidc.example.com:443", wantErr: "issuer rules"},
		{url: "https://oidc.example.com:/x", wantErr: "issuer rules"},
		{url: "https://oidc.example.com/x?a=b", wantErr: "issuer rules"},
		{url: "https://oidc.example.com/x#f", wantErr: "issuer rules"},
		{url: "https://oidc.example.com/x/", wantErr: "issuer rules"},
		{url: "https://oidc.example.com/c/../d", wantErr: "issuer rules"},
		{url: "https://user@oidc.example.com", wantErr: "issuer rules"},
		{url: "https:///x", wantErr: "issuer rules"},
		{url: "", wantErr: "issuer rules"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			want := tt.wantErr
			if want == "issuer rules" {
				want = documents.ValidateIssuerURL(tt.url).Error()
			}
			err := ValidateProviderURL(tt.url)
			switch {
			case want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case want != "" && (err == nil || err.Error() != want):
				t.Fatalf("error\n got %v\nwant %s", err, want)
			}
			var ue *documents.IssuerURLError
			if err != nil && !errors.As(err, &ue) {
				t.Fatalf("error %#v is not a *documents.IssuerURLError", err)
			}
		})
	}
}

func TestNames(t *testing.T) {
	const u = "https://oidc.example.com/clusters/prod-1"
	if got, want := HostPath(u), "oidc.example.com/clusters/prod-1"; got != want {
		t.Errorf("HostPath = %q, want %q", got, want)
	}
	arn := ProviderARN("aws-cn", "123456789012", u)
	if want := "arn:aws-cn:iam::123456789012:oidc-provider/oidc.example.com/clusters/prod-1"; arn != want {
		t.Errorf("ProviderARN = %q, want %q", arn, want)
	}
	for _, tt := range []struct {
		arn, hostPath string
		ok            bool
	}{
		{arn: arn, hostPath: "oidc.example.com/clusters/prod-1", ok: true},
		{arn: "arn:aws:iam::123456789012:oidc-provider/a.example", hostPath: "a.example", ok: true},
		{arn: "arn:aws:iam::123456789012:role/oidc-provider/x"},
		{arn: "oidc-provider/x"},
	} {
		hp, ok := HostPathFromARN(tt.arn)
		if hp != tt.hostPath || ok != tt.ok {
			t.Errorf("HostPathFromARN(%q) = %q, %v; want %q, %v", tt.arn, hp, ok, tt.hostPath, tt.ok)
		}
	}
}

func TestValidators(t *testing.T) {
	tests := []struct {
		name string
		err  error
		ok   bool
	}{
		{"account 12 digits", ValidateAccountID("123456789012"), true},
		{"account 11 digits", ValidateAccountID("12345678901"), false},
		{"account letters", ValidateAccountID("12345678901a"), false},
		{"partition aws", ValidatePartition("aws"), true},
		{"partition aws-cn", ValidatePartition("aws-cn"), true},
		{"partition aws-us-gov", ValidatePartition("aws-us-gov"), true},
		{"partition empty", ValidatePartition(""), false},
		{"partition aws-", ValidatePartition("aws-"), false},
		{"partition AWS", ValidatePartition("AWS"), false},
		{"partition azure", ValidatePartition("azure"), false},
		{"audiences default", ValidateAudiences([]string{DefaultAudience}), true},
		{"audiences none", ValidateAudiences(nil), false},
		{"audience empty", ValidateAudiences([]string{""}), false},
		{"audience too long", ValidateAudiences([]string{strings.Repeat("a", 256)}), false},
		{"audience twice", ValidateAudiences([]string{"a", "a"}), false},
		{"101 audiences", ValidateAudiences(make([]string, 101)), false},
	}
	for _, tt := range tests {
		if (tt.err == nil) != tt.ok {
			t.Errorf("%s: error %v, want ok=%v", tt.name, tt.err, tt.ok)
		}
	}
}

func TestNormalizeThumbprint(t *testing.T) {
	const want = "9e99a48a9960b14926bb7f3b02e22da2b0ab7280"
	for _, in := range []string{
		want,
		strings.ToUpper(want),
		"9E:99:A4:8A:99:60:B1:49:26:BB:7F:3B:02:E2:2D:A2:B0:AB:72:80",
		" " + want + "\n",
	} {
		got, err := NormalizeThumbprint(in)
		if err != nil || got != want {
			t.Errorf("NormalizeThumbprint(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", want[:39], want + "0", "zz" + want[2:]} {
		if _, err := NormalizeThumbprint(in); err == nil {
			t.Errorf("NormalizeThumbprint(%q): no error", in)
		}
	}
}

func TestRegistrationPolicy(t *testing.T) {
	doc := RegistrationPolicy("aws", "123456789012", "https://oidc.example.com/clusters/prod-1")
	b, err := doc.Render()
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "FindOIDCProvider",
      "Effect": "Allow",
      "Action": "iam:ListOpenIDConnectProviders",
      "Resource": "*"
    },
    {
      "Sid": "ManageOIDCProvider",
      "Effect": "Allow",
      "Action": [
        "iam:CreateOpenIDConnectProvider",
        "iam:GetOpenIDConnectProvider",
        "iam:UpdateOpenIDConnectProviderThumbprint",
        "iam:AddClientIDToOpenIDConnectProvider",
        "iam:RemoveClientIDFromOpenIDConnectProvider",
        "iam:TagOpenIDConnectProvider"
      ],
      "Resource": "arn:aws:iam::123456789012:oidc-provider/oidc.example.com/clusters/prod-1"
    }
  ]
}
`
	if string(b) != want {
		t.Errorf("policy:\n%s\nwant:\n%s", b, want)
	}
	// Every required action is granted somewhere, and the document reads back.
	var back PolicyDocument
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	var granted []string
	for _, s := range back.Statement {
		granted = append(granted, s.Action...)
	}
	if strings.Join(granted, ",") != strings.Join(RequiredActions(), ",") {
		t.Errorf("granted %v, required %v", granted, RequiredActions())
	}
	any := RegistrationPolicy("aws", "*", "")
	if got := any.Statement[1].Resource[0]; got != "arn:aws:iam::*:oidc-provider/*" {
		t.Errorf("resource without URL and account: %q", got)
	}
}
