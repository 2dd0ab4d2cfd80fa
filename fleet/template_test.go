package fleet

import (
	"strings"
	"testing"
)

func TestURLTemplate(t *testing.T) {
	tests := []struct {
		template, namespace, cluster string
		want, wantPrefix, wantErr    string
	}{
		{template: "https://oidc.example.com/clusters/{cluster}", namespace: "ns", cluster: "a",
			want: "https://oidc.example.com/clusters/a", wantPrefix: "https://oidc.example.com/clusters/"},
		{template: "https://oidc.example.com/{namespace}/{cluster}", namespace: "team-a", cluster: "prod-1",
			want: "https://oidc.example.com/team-a/prod-1", wantPrefix: "https://oidc.example.com/"},
		{template: "https://oidc.example.com/c-{cluster}", namespace: "ns", cluster: "a",
			want: "https://oidc.example.com/c-a", wantPrefix: "https://oidc.example.com/c-"},
		{template: "https://oidc.example.com/clusters/{cluster}", namespace: "ns", cluster: "bad.name", wantErr: "not a DNS-1123 label"},
		{template: "https://oidc.example.com/clusters/{cluster}", namespace: "ns", cluster: "UPPER", wantErr: "not a DNS-1123 label"},
		{template: "https://oidc.example.com/{namespace}/{cluster}", namespace: "Bad_NS", cluster: "a", wantErr: "namespace"},
		// {namespace} absent: the namespace's name does not matter.
		{template: "https://oidc.example.com/{cluster}", namespace: "Bad_NS", cluster: "a",
			want: "https://oidc.example.com/a", wantPrefix: "https://oidc.example.com/"},
	}
	for _, tt := range tests {
		t.Run(tt.template+" "+tt.namespace+"/"+tt.cluster, func(t *testing.T) {
			tmpl, err := ParseURLTemplate(tt.template)
			if err != nil {
				t.Fatal(err)
			}
			if got := tmpl.StaticPrefix(); got != tt.wantPrefix && tt.wantErr == "" {
				t.Errorf("StaticPrefix() = %q, want %q", got, tt.wantPrefix)
			}
			got, err := tmpl.Expand(tt.namespace, tt.cluster)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Expand: %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Expand = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "https://oidc.example.com", "https://{cluster}.example.com/x", "https://oidc.example.com/{region}/{cluster}",
		"http://oidc.example.com/{cluster}", "https://oidc.example.com/{cluster}/", "https://oidc.example.com/{cluster}?q=1"} {
		if _, err := ParseURLTemplate(bad); err == nil {
			t.Errorf("ParseURLTemplate(%q) succeeded", bad)
		}
	}
}

// FuzzExpand: whatever a label holds, an issuer URL Expand accepts is valid, starts with the
// template's fixed prefix and holds exactly the template's path segments (a name never adds one).
func FuzzExpand(f *testing.F) {
	for _, s := range [][2]string{{"ns", "a"}, {"team-a", "prod-1"}, {"..", "a/b"}, {"ns", "%2e%2e"}, {"ns", "a.b"}, {"", ""}} {
		f.Add(s[0], s[1])
	}
	tmpl, err := ParseURLTemplate("https://oidc.example.com/clusters/{namespace}/{cluster}")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, namespace, cluster string) {
		u, err := tmpl.Expand(namespace, cluster)
		if err != nil {
			return
		}
		if !strings.HasPrefix(u, tmpl.StaticPrefix()) || strings.Count(u, "/") != strings.Count(tmpl.String(), "/") {
			t.Fatalf("Expand(%q, %q) = %q", namespace, cluster, u)
		}
		if u != "https://oidc.example.com/clusters/"+namespace+"/"+cluster {
			t.Fatalf("Expand(%q, %q) = %q", namespace, cluster, u)
		}
	})
}
