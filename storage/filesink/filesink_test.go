package filesink

import (
	"context"
	"errors"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage/storagetest"
)

func harness(t *testing.T) storagetest.Harness {
	root := filepath.Join(t.TempDir(), "www")
	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	return storagetest.Harness{
		Sink: s,
		Fetch: func(_ context.Context, key string) (storagetest.Fetched, error) {
			b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(key)))
			if errors.Is(err, fs.ErrNotExist) {
				return storagetest.Fetched{}, nil
			}
			if err != nil {
				return storagetest.Fetched{}, err
			}
			return storagetest.Fetched{Found: true, Body: b}, nil
		},
		Remove: func(_ context.Context, key string) error {
			return os.Remove(filepath.Join(root, filepath.FromSlash(key)))
		},
	}
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, harness)
}

// TestFilesAreReadableAndNoTempFilesRemain: the web server (another user) can read what is
// written, and no temporary file is left next to the documents, also after a failed write.
func TestFilesAreReadableAndNoTempFilesRemain(t *testing.T) {
	h := harness(t)
	ctx := context.Background()
	set := storagetest.NewSets(t).First
	if _, err := storage.Publish(ctx, h.Sink, set); err != nil {
		t.Fatal(err)
	}
	root := strings.TrimPrefix(h.Sink.String(), "file://")
	// A directory where the JWKS should go makes the rename fail after the temp file was written.
	jwksDir := filepath.Join(root, "other", "openid", "v1", "jwks")
	if err := os.MkdirAll(jwksDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := h.Sink.Put(ctx, storagetest.NewObject("other/openid/v1/jwks", []byte("x"), "", "")); err == nil {
		t.Fatal("Put over a directory succeeded")
	}
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			if info.Mode().Perm()&0o005 != 0o005 {
				t.Errorf("directory %s has mode %v: others cannot enter it", p, info.Mode())
			}
			return nil
		}
		files = append(files, strings.TrimPrefix(p, root+"/"))
		if info.Mode().Perm() != fileMode {
			t.Errorf("%s has mode %v, want %v", p, info.Mode().Perm(), os.FileMode(fileMode))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".well-known/openid-configuration", "openid/v1/jwks"}
	if strings.Join(files, ",") != strings.Join(want, ",") {
		t.Fatalf("files under the web root: %v, want exactly %v", files, want)
	}
}

func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		name, target, issuer string
		wantRoot             string
		wantErr              string
	}{
		{name: "issuer at the host root", target: "file:///srv/www/oidc", issuer: "https://oidc.example.com", wantRoot: "/srv/www/oidc"},
		{name: "issuer with a path", target: "file:///srv/www/oidc", issuer: "https://oidc.example.com/clusters/a", wantRoot: "/srv/www/oidc/clusters/a"},
		{name: "localhost host", target: "file://localhost/srv/www", issuer: "https://oidc.example.com/a", wantRoot: "/srv/www/a"},
		{name: "escaped issuer path is decoded", target: "file:///srv/www", issuer: "https://oidc.example.com/team%20a", wantRoot: "/srv/www/team a"},
		{name: "trailing slash on the root", target: "file:///srv/www/", issuer: "https://oidc.example.com/a", wantRoot: "/srv/www/a"},
		{name: "remote host", target: "file://server/srv/www", issuer: "https://oidc.example.com", wantErr: "local directory"},
		{name: "relative path", target: "file:www", issuer: "https://oidc.example.com", wantErr: "ABSOLUTE"},
		{name: "query", target: "file:///srv/www?x=1", issuer: "https://oidc.example.com", wantErr: "no query"},
		{name: "dot-dot in the issuer path", target: "file:///srv/www", issuer: "https://oidc.example.com/a/%2E%2E/b", wantErr: "plain directory name"},
		{name: "empty segment in the issuer path", target: "file:///srv/www", issuer: "https://oidc.example.com/a//b", wantErr: "plain directory name"},
		{name: "not a file URL", target: "s3://bucket", issuer: "https://oidc.example.com", wantErr: "not a file://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Resolve(u, tc.issuer)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Resolve: %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.root != tc.wantRoot {
				t.Fatalf("root %q, want %q", s.root, tc.wantRoot)
			}
		})
	}
}

func TestKeysCannotEscapeTheRoot(t *testing.T) {
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/.", ".."} {
		if err := s.Put(context.Background(), storagetest.NewObject(key, []byte("x"), "", "")); err == nil {
			t.Errorf("Put of key %q succeeded", key)
		}
	}
	if _, err := New("relative/dir"); err == nil {
		t.Error("New accepted a relative root")
	}
}
