package s3sink

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

const (
	jwksARN      = "arn:aws:s3:::b/p/openid/v1/jwks"
	discoveryARN = "arn:aws:s3:::b/p/.well-known/openid-configuration"
)

func TestEvaluate(t *testing.T) {
	arns := []string{jwksARN, discoveryARN}
	for _, tc := range []struct {
		name        string
		policy      string
		wantMissing []string
		wantDenied  []string
		wantErr     bool
	}{
		{name: "no policy", policy: "", wantMissing: arns},
		{name: "exact grant", policy: `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":["` + jwksARN + `","` + discoveryARN + `"]}]}`},
		{name: "single statement object, AWS principal list, wildcard resource", policy: `{"Statement":{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":["s3:Get*"],"Resource":"arn:aws:s3:::b/*"}}`},
		{name: "action case does not matter", policy: `{"Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"S3:getobject","Resource":"arn:aws:s3:::b/p/*"}]}`},
		{name: "only one object", policy: `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"` + jwksARN + `"}]}`, wantMissing: []string{discoveryARN}},
		{name: "principal is an account, not everyone", policy: `{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}`, wantMissing: arns},
		{name: "conditional allow does not count", policy: `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}`, wantMissing: arns},
		{name: "other bucket", policy: `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bb/*"}]}`, wantMissing: arns},
		{name: "wrong action", policy: `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:PutObject","Resource":"arn:aws:s3:::b/*"}]}`, wantMissing: arns},
		{name: "unconditional deny", policy: `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b/*"},{"Sid":"NoJWKS","Effect":"Deny","Principal":"*","Action":"*","Resource":"` + jwksARN + `"}]}`, wantDenied: []string{"NoJWKS"}},
		{name: "HTTPS-only deny is fine", policy: `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/p/*"},{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b/*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}`},
		{name: "garbage", policy: `{"Statement":`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := evaluate(tc.policy, arns)
			if tc.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ev.missing, tc.wantMissing) || !slices.Equal(ev.denied, tc.wantDenied) {
				t.Fatalf("missing %v denied %v; want %v, %v", ev.missing, ev.denied, tc.wantMissing, tc.wantDenied)
			}
		})
	}
}

func TestWildcardMatch(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		want bool
	}{
		{"*", "", true}, {"*", "abc", true}, {"a*c", "abbbc", true}, {"a*c", "abcd", false},
		{"a?c", "abc", true}, {"a?c", "ac", false}, {"arn:aws:s3:::b/*", "arn:aws:s3:::b/x/y", true},
		{"arn:aws:s3:::b/*", "arn:aws:s3:::bb/x", false}, {"*jwks", "openid/v1/jwks", true}, {"", "", true}, {"", "a", false},
	} {
		if got := wildcardMatch(tc.p, tc.s); got != tc.want {
			t.Errorf("wildcardMatch(%q, %q) = %v, want %v", tc.p, tc.s, got, tc.want)
		}
	}
}

func TestMergeStatementKeepsOthersAndReplacesOurs(t *testing.T) {
	ours := Statement{Sid: "KubeOIDCIssuerPublicReadabcd", Effect: "Allow", Principal: "*", Action: "s3:GetObject", Resource: []string{jwksARN, discoveryARN}}
	existing := `{"Version":"2012-10-17","Id":"keep-me","Statement":[{"Sid":"Other","Effect":"Deny","Principal":"*","Action":"s3:DeleteObject","Resource":"arn:aws:s3:::b/*"},{"Sid":"KubeOIDCIssuerPublicReadabcd","Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/old"}]}`
	merged, err := mergeStatement(existing, ours)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Version, Id string
		Statement   []map[string]any
	}
	if err := json.Unmarshal([]byte(merged), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Id != "keep-me" || doc.Version != "2012-10-17" || len(doc.Statement) != 2 || doc.Statement[0]["Sid"] != "Other" || doc.Statement[1]["Sid"] != ours.Sid {
		t.Fatalf("merged policy %s", merged)
	}
	ev, err := evaluate(merged, ours.Resource)
	if err != nil || len(ev.missing) != 0 {
		t.Fatalf("merged policy does not grant read: %+v %v", ev, err)
	}

	fresh, err := mergeStatement("", ours)
	if err != nil || !strings.Contains(fresh, `"Version":"2012-10-17"`) {
		t.Fatalf("new policy %s, %v", fresh, err)
	}
	if _, err := mergeStatement("not json", ours); err == nil {
		t.Fatal("merged into garbage")
	}
}
