package admin

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	tokenA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	tokenB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func TestStaticTokenFollowsTheFile(t *testing.T) {
	writeInPlace := func(t *testing.T, path, content string) {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	replaceByRename := func(t *testing.T, path, content string) {
		tmp := path + ".tmp"
		writeInPlace(t, tmp, content)
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	remove := func(t *testing.T, path, _ string) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name     string
		change   func(t *testing.T, path, content string)
		content  string
		accepted []string
		refused  []string
		logged   string
	}{
		{"rewritten in place", writeInPlace, tokenB + "\n", []string{tokenB}, []string{tokenA}, "reloaded"},
		{"replaced by rename", replaceByRename, tokenB, []string{tokenB}, []string{tokenA}, "reloaded"},
		{"replaced by a token too short", writeInPlace, "short\n", []string{tokenA}, []string{"short"}, "cannot be used"},
		{"emptied", writeInPlace, "", []string{tokenA}, []string{""}, "cannot be used"},
		{"removed", remove, "", []string{tokenA}, []string{""}, "unreadable"},
		{"touched with the same token", replaceByRename, tokenA + "\n", []string{tokenA}, []string{tokenB}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "token")
			writeInPlace(t, path, tokenA+"\n")
			var logs bytes.Buffer
			st, err := LoadStaticToken(path, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if !st.Matches(tokenA) {
				t.Fatal("the loaded token does not match")
			}
			tc.change(t, path, tc.content)
			for _, tok := range tc.accepted {
				if !st.Matches(tok) {
					t.Errorf("token %.4s… refused, want accepted", tok)
				}
			}
			for _, tok := range tc.refused {
				if st.Matches(tok) {
					t.Errorf("token %q accepted, want refused", tok)
				}
			}
			if tc.logged == "" && logs.Len() > 0 {
				t.Errorf("logged %q, want nothing", logs.String())
			}
			if !strings.Contains(logs.String(), tc.logged) {
				t.Errorf("log %q does not say %q", logs.String(), tc.logged)
			}
			for _, secret := range []string{tokenA, tokenB} {
				if strings.Contains(logs.String(), secret) {
					t.Fatal("a token reached the log")
				}
			}
		})
	}
}

// A Secret mounted as a volume is updated by the kubelet swapping the ..data symlink; the token
// path itself never changes.
func TestStaticTokenFollowsAMountedSecretUpdate(t *testing.T) {
	dir := t.TempDir()
	for name, tok := range map[string]string{"..v1": tokenA, "..v2": tokenB} {
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "token"), []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/token", filepath.Join(dir, "token")); err != nil {
		t.Fatal(err)
	}
	st, err := LoadStaticToken(filepath.Join(dir, "token"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Matches(tokenA) {
		t.Fatal("the mounted token does not match")
	}
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if !st.Matches(tokenB) || st.Matches(tokenA) {
		t.Error("after the ..data swap the new token must be the only one accepted")
	}
}
