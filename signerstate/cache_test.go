package signerstate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/boundedread"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

func newState(t *testing.T) *lifecycle.State {
	t.Helper()
	st, err := lifecycle.NewSignerState(nil, lifecycle.AlgorithmES256, t0)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestCacheRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	st := newState(t)
	if err := WriteCache(path, st); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache mode %#o, want 0600", fi.Mode().Perm())
	}
	back, err := ReadCache(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := back.Active()
	want, _ := st.Active()
	if back.ID != st.ID || back.Generation != 1 || a.KID != want.KID || !a.HasPrivateKey() {
		t.Fatalf("read back id %s generation %d active %s", back.ID, back.Generation, a.KID)
	}
	// A rewrite replaces it whole, leaving no temporary file behind.
	st.Generation = 2
	if err := WriteCache(path, st); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries after two writes, want the cache alone", len(entries))
	}
}

func TestReadCacheRefuses(t *testing.T) {
	dir := t.TempDir()
	good := newState(t)
	goodPath := filepath.Join(dir, "good.json")
	if err := WriteCache(goodPath, good); err != nil {
		t.Fatal(err)
	}
	goodDoc, _ := os.ReadFile(goodPath)
	secretMode, _ := lifecycle.MarshalDocument(&lifecycle.State{})
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
		is   error
		want string
	}{
		{"missing", filepath.Join(dir, "nope"), ErrNoCache, ""},
		{"world-readable", write("open.json", goodDoc, 0o644), nil, "must be 0600"},
		{"corrupt", write("corrupt.json", goodDoc[:len(goodDoc)/2], 0o600), nil, "corrupt"},
		{"not signer mode", write("secret-mode.json", secretMode, 0o600), nil, "no signer-mode state"},
		{"fifo", fifo, boundedread.ErrNotRegular, ""},
		{"too large", write("large.json", []byte(strings.Repeat(" ", maxCacheSize+1)), 0o600), boundedread.ErrTooLarge, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { _, err := ReadCache(tc.path); done <- err }()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("ReadCache blocked")
			}
			switch {
			case err == nil:
				t.Fatal("accepted")
			case tc.is != nil && !errors.Is(err, tc.is):
				t.Fatalf("%v, want %v", err, tc.is)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("%v, want it to say %q", err, tc.want)
			case strings.Contains(err.Error(), "PRIVATE KEY"):
				t.Fatalf("the error quotes key material: %v", err)
			}
		})
	}
}

func TestWriteCacheMissingDirectory(t *testing.T) {
	err := WriteCache(filepath.Join(t.TempDir(), "no", "such", "dir", "state.json"), newState(t))
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("writing into a missing directory: %v", err)
	}
}
