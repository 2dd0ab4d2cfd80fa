package signingprobe

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func jws(header, payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(header)) + "." + enc([]byte(payload)) + ".c2ln"
}

func TestParseHeader(t *testing.T) {
	const secretPayload = `{"sub":"system:serviceaccount:ns:sa","secret":"do-not-echo"}`
	tests := []struct {
		name    string
		token   string
		want    Header
		wantErr string
	}{
		{name: "kube-apiserver header", token: jws(`{"alg":"RS256","kid":"abc"}`, secretPayload), want: Header{Algorithm: "RS256", KeyID: "abc"}},
		{name: "external signer header with typ", token: jws(`{"alg":"ES256","kid":"k-1","typ":"JWT"}`, "{}"), want: Header{Algorithm: "ES256", KeyID: "k-1"}},
		{name: "no kid", token: jws(`{"alg":"RS256"}`, secretPayload), wantErr: "no kid"},
		{name: "empty kid", token: jws(`{"alg":"RS256","kid":""}`, secretPayload), wantErr: "no kid"},
		{name: "no alg", token: jws(`{"kid":"abc"}`, secretPayload), wantErr: "no alg"},
		{name: "kid too long", token: jws(`{"alg":"RS256","kid":"`+strings.Repeat("k", maxKIDLength+1)+`"}`, "{}"), wantErr: "more than 1024"},
		{name: "two parts", token: "eyJhbGciOiJSUzI1NiJ9.e30", wantErr: "three dot-separated parts"},
		{name: "four parts", token: jws(`{"alg":"RS256","kid":"a"}`, "{}") + ".x", wantErr: "three dot-separated parts"},
		{name: "empty header", token: ".e30.c2ln", wantErr: "want 1 to"},
		{name: "huge header", token: strings.Repeat("a", maxHeaderSize+1) + ".e30.c2ln", wantErr: "want 1 to"},
		{name: "padded base64", token: base64.URLEncoding.EncodeToString([]byte(`{"alg":"RS256","kid":"ab"}`)) + ".e30.c2ln", wantErr: "base64url"},
		{name: "header not JSON", token: jws(`not json`, secretPayload), wantErr: "not a JSON object"},
		{name: "header a JSON array", token: jws(`["alg"]`, secretPayload), wantErr: "not a JSON object"},
		{name: "kid not a string", token: jws(`{"alg":"RS256","kid":7}`, secretPayload), wantErr: "not a JSON object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseHeader(tc.token)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				// The token is a credential: no error may quote any of it.
				if strings.Contains(err.Error(), "do-not-echo") || (len(tc.token) > 8 && strings.Contains(err.Error(), tc.token[:8])) {
					t.Errorf("error quotes the token: %v", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseHeader = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add(jws(`{"alg":"RS256","kid":"abc"}`, "{}"))
	f.Add("a.b.c")
	f.Add("..")
	f.Fuzz(func(t *testing.T, token string) {
		h, err := ParseHeader(token)
		if err != nil {
			return
		}
		if h.KeyID == "" || len(h.KeyID) > maxKIDLength || h.Algorithm == "" {
			t.Fatalf("accepted header %+v", h)
		}
	})
}

func TestOwnServiceAccount(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(dir, "fifo")
	tests := []struct {
		name   string
		path   string
		want   string
		wantOK bool
	}{
		{name: "projected token", path: write("ok", jws(`{"alg":"RS256","kid":"a"}`, `{"sub":"system:serviceaccount:kube-oidc-issuer:kube-oidc-issuer"}`)+"\n"),
			want: "kube-oidc-issuer/kube-oidc-issuer", wantOK: true},
		{name: "not a service account", path: write("user", jws(`{"alg":"RS256"}`, `{"sub":"alice"}`))},
		{name: "no name", path: write("noname", jws(`{"alg":"RS256"}`, `{"sub":"system:serviceaccount:ns:"}`))},
		{name: "garbage", path: write("garbage", "not a token")},
		{name: "missing", path: filepath.Join(dir, "missing")},
		{name: "a FIFO is never opened for reading", path: fifo},
	}
	if err := mkfifo(fifo); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ownServiceAccount(tc.path)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("ownServiceAccount = %q, %v; want %q, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func mkfifo(path string) error { return syscall.Mkfifo(path, 0o600) }
