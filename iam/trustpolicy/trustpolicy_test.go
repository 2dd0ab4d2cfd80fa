package trustpolicy

import (
	"strings"
	"testing"
)

func mustSAs(t *testing.T, refs ...string) []ServiceAccount {
	t.Helper()
	var out []ServiceAccount
	for _, r := range refs {
		sa, err := ParseServiceAccount(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sa)
	}
	return out
}

func TestBuild(t *testing.T) {
	const issuer = "https://oidc.example.com/clusters/prod-1"
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{
			name: "one service account, default audience",
			opts: Options{IssuerURL: issuer, AccountID: "123456789012", ServiceAccounts: mustSAs(t, "payments/api")},
			want: `{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "ServiceAccounts",
      "Effect": "Allow",
      "Principal": {
        "Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.example.com/clusters/prod-1"
      },
      "Action": "sts:AssumeRoleWithWebIdentity",
      "Condition": {
        "StringEquals": {
          "oidc.example.com/clusters/prod-1:aud": "sts.amazonaws.com",
          "oidc.example.com/clusters/prod-1:sub": "system:serviceaccount:payments:api"
        }
      }
    }
  ]
}
`,
		},
		{
			name: "exact and wildcard, two audiences, other partition",
			opts: Options{
				IssuerURL: issuer, AccountID: "123456789012", Partition: "aws-cn",
				ServiceAccounts: mustSAs(t, "payments/api", "payments/worker", "batch/job-*", "payments/api"),
				Audiences:       []string{"sts.amazonaws.com", "sts.amazonaws.com.cn"},
			},
			want: `{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "ServiceAccounts",
      "Effect": "Allow",
      "Principal": {
        "Federated": "arn:aws-cn:iam::123456789012:oidc-provider/oidc.example.com/clusters/prod-1"
      },
      "Action": "sts:AssumeRoleWithWebIdentity",
      "Condition": {
        "StringEquals": {
          "oidc.example.com/clusters/prod-1:aud": [
            "sts.amazonaws.com",
            "sts.amazonaws.com.cn"
          ],
          "oidc.example.com/clusters/prod-1:sub": [
            "system:serviceaccount:payments:api",
            "system:serviceaccount:payments:worker"
          ]
        }
      }
    },
    {
      "Sid": "ServiceAccountPatterns",
      "Effect": "Allow",
      "Principal": {
        "Federated": "arn:aws-cn:iam::123456789012:oidc-provider/oidc.example.com/clusters/prod-1"
      },
      "Action": "sts:AssumeRoleWithWebIdentity",
      "Condition": {
        "StringEquals": {
          "oidc.example.com/clusters/prod-1:aud": [
            "sts.amazonaws.com",
            "sts.amazonaws.com.cn"
          ]
        },
        "StringLike": {
          "oidc.example.com/clusters/prod-1:sub": "system:serviceaccount:batch:job-*"
        }
      }
    }
  ]
}
`,
		},
		{
			name: "only a namespace wildcard",
			opts: Options{IssuerURL: "https://oidc.example.com", AccountID: "123456789012", ServiceAccounts: mustSAs(t, "ci/*")},
			want: `{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "ServiceAccountPatterns",
      "Effect": "Allow",
      "Principal": {
        "Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.example.com"
      },
      "Action": "sts:AssumeRoleWithWebIdentity",
      "Condition": {
        "StringEquals": {
          "oidc.example.com:aud": "sts.amazonaws.com"
        },
        "StringLike": {
          "oidc.example.com:sub": "system:serviceaccount:ci:*"
        }
      }
    }
  ]
}
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := Build(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			b, err := doc.Render()
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", b, tt.want)
			}
		})
	}
}

func TestBuildRejects(t *testing.T) {
	good := Options{IssuerURL: "https://oidc.example.com", AccountID: "123456789012", ServiceAccounts: []ServiceAccount{{"a", "b"}}}
	tests := []struct {
		name   string
		modify func(*Options)
		want   string
	}{
		{"port in URL", func(o *Options) { o.IssuerURL = "https://oidc.example.com:8443" }, "port"},
		{"trailing slash", func(o *Options) { o.IssuerURL = "https://oidc.example.com/" }, "slash"},
		{"bad account", func(o *Options) { o.AccountID = "1234" }, "12 digits"},
		{"no account", func(o *Options) { o.AccountID = "" }, "12 digits"},
		{"bad partition", func(o *Options) { o.Partition = "gcp" }, "partition"},
		{"no service account", func(o *Options) { o.ServiceAccounts = nil }, "no service account"},
		{"policy variable", func(o *Options) { o.ServiceAccounts = []ServiceAccount{{"a", "${aws:username}"}} }, "only lower-case"},
		{"empty audience", func(o *Options) { o.Audiences = []string{""} }, "audience"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good
			tt.modify(&o)
			if _, err := Build(o); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestParseServiceAccount(t *testing.T) {
	tests := []struct {
		in       string
		want     ServiceAccount
		wildcard bool
		wantErr  string
	}{
		{in: "kube-system/aws-node", want: ServiceAccount{"kube-system", "aws-node"}},
		{in: "default/my.app", want: ServiceAccount{"default", "my.app"}},
		{in: "ci/runner-?", want: ServiceAccount{"ci", "runner-?"}, wildcard: true},
		{in: "*/reader", want: ServiceAccount{"*", "reader"}, wildcard: true},
		{in: "default", wantErr: "NAMESPACE/NAME"},
		{in: "a/b/c", wantErr: "NAMESPACE/NAME"},
		{in: "/b", wantErr: "empty namespace"},
		{in: "a/", wantErr: "empty name"},
		{in: "Default/app", wantErr: "only lower-case"},
		{in: "ns.with.dots/app", wantErr: "namespace"},
		{in: "a/" + strings.Repeat("x", 254), wantErr: "longer than 253"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			sa, err := ParseServiceAccount(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sa != tt.want || sa.Wildcard() != tt.wildcard {
				t.Errorf("got %+v (wildcard %v), want %+v (%v)", sa, sa.Wildcard(), tt.want, tt.wildcard)
			}
			if got := sa.Subject(); got != "system:serviceaccount:"+tt.want.Namespace+":"+tt.want.Name {
				t.Errorf("Subject = %q", got)
			}
		})
	}
}

func TestRoleAndAnnotations(t *testing.T) {
	if got := RoleARN("", "123456789012", "team/app"); got != "arn:aws:iam::123456789012:role/team/app" {
		t.Errorf("RoleARN = %q", got)
	}
	for _, tt := range []struct {
		name string
		ok   bool
	}{{"app", true}, {"team/app-1+x=y,z.w@v_u", true}, {"", false}, {"team/", false}, {"a b", false}, {strings.Repeat("r", 65), false}} {
		if err := ValidateRoleName(tt.name); (err == nil) != tt.ok {
			t.Errorf("ValidateRoleName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
	a := Annotations("arn:aws:iam::123456789012:role/app", nil)
	if len(a) != 1 || a[RoleARNAnnotation] != "arn:aws:iam::123456789012:role/app" {
		t.Errorf("default audience: %v", a)
	}
	a = Annotations("arn:aws:iam::123456789012:role/app", []string{"sts.amazonaws.com"})
	if len(a) != 1 {
		t.Errorf("sts.amazonaws.com needs no audience annotation: %v", a)
	}
	a = Annotations("arn:aws:iam::123456789012:role/app", []string{"my-aud", "sts.amazonaws.com"})
	if a[AudienceAnnotation] != "my-aud" {
		t.Errorf("custom audience: %v", a)
	}
}
