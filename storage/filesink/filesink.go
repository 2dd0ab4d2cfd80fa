// Package filesink mirrors the issuer's documents into a web root (--mirror file:///srv/www/oidc),
// for nginx or any web server behind a custom domain. Files are replaced atomically (a temporary
// file in the same directory, fsync, rename), so the web server never serves a partial document.
//
// A web root stores bodies only: the web server sets Content-Type and Cache-Control from its own
// configuration, and an unchanged file is recognised by hashing its content (the documents are a
// few kilobytes), so no sidecar or extended attribute is needed.
package filesink

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage"
)

// Permissions of what the sink creates: the web server, usually another user, must read them.
const (
	dirMode  = 0o755
	fileMode = 0o644
)

// Sink writes objects as files below a root directory.
type Sink struct {
	root string
}

var _ storage.Sink = (*Sink)(nil)

// New returns a sink writing below root, which must be an absolute path. The directory is
// created on the first Put if it does not exist.
func New(root string) (*Sink, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("web root %q must be an absolute path", root)
	}
	return &Sink{root: filepath.Clean(root)}, nil
}

// Resolve returns the sink for --mirror target (file:///srv/www/oidc) and the issuer URL: the
// documents go below the web root at the issuer URL's path, so that a web server whose document
// root is /srv/www/oidc serves them at the issuer URL (issuer https://oidc.example.com/cluster-a:
// /srv/www/oidc/cluster-a/.well-known/openid-configuration).
func Resolve(target *url.URL, issuerURL string) (*Sink, error) {
	if target.Scheme != "file" {
		return nil, fmt.Errorf("--mirror %s: not a file:// URL", target.Redacted())
	}
	if target.Host != "" && target.Host != "localhost" {
		return nil, fmt.Errorf("--mirror %s: a file URL names a local directory: use file:///ABSOLUTE/PATH", target.Redacted())
	}
	if target.RawQuery != "" || target.Fragment != "" {
		return nil, fmt.Errorf("--mirror %s: a file URL takes no query or fragment", target.Redacted())
	}
	if target.Path == "" || !strings.HasPrefix(target.Path, "/") {
		return nil, fmt.Errorf("--mirror %s: use file:///ABSOLUTE/PATH", target.Redacted())
	}
	issuer, err := url.Parse(issuerURL)
	if err != nil {
		return nil, fmt.Errorf("parsing issuer URL: %w", err)
	}
	sub, err := issuerDir(issuer.Path)
	if err != nil {
		return nil, err
	}
	return New(filepath.Join(filepath.FromSlash(target.Path), filepath.FromSlash(sub)))
}

// issuerDir checks that the issuer URL's (decoded) path maps to a directory below the web root.
func issuerDir(p string) (string, error) {
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return "", nil
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." || strings.ContainsRune(seg, '\\') || strings.ContainsRune(seg, 0) {
			return "", fmt.Errorf("issuer path %q cannot be mirrored to a web root: every segment must be a plain directory name", "/"+p)
		}
	}
	return p, nil
}

// String is the web root as a file URL.
func (s *Sink) String() string {
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(s.root)}).String()
}

// Location is the file a key is written to.
func (s *Sink) Location(key string) string {
	p, err := s.path(key)
	if err != nil {
		return s.root + "/" + key
	}
	return p
}

// path maps a key to a file below the root, refusing anything that would escape it.
func (s *Sink) path(key string) (string, error) {
	if key == "" || strings.HasPrefix(key, "/") || path.Clean(key) != key || key == "." || strings.HasPrefix(key, "../") || key == ".." || strings.ContainsRune(key, 0) {
		return "", fmt.Errorf("object key %q is not a clean relative path", key)
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// Stat hashes the file's content.
func (s *Sink) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	p, err := s.path(key)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("reading %s: %w", p, err)
	}
	body, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return storage.ObjectInfo{}, fmt.Errorf("reading %s: %w", p, storage.ErrNotFound)
	}
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("reading %s: %w", p, err)
	}
	sum := sha256.Sum256(body)
	return storage.ObjectInfo{SHA256: hex.EncodeToString(sum[:])}, nil
}

// Put writes o to a temporary file next to its destination, flushes it to disk, renames it over
// the destination and flushes the directory, so that the web server sees the old file or the new
// one and a crash leaves one of them.
func (s *Sink) Put(ctx context.Context, o storage.Object) error {
	dst, err := s.path(o.Key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	dir := filepath.Dir(dst)
	tmp, err := createTemp(dir, dst)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(o.Body); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(fileMode); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("writing %s: flushing: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	committed = true
	return syncDir(dir)
}

// createTemp creates dir and the temporary file for dst in it. A concurrent Delete of another key
// may remove dir (or a parent) once it is empty, between the two steps: then both are tried again.
// Once the temporary file exists the directory is not empty, so it stays until the rename.
func createTemp(dir, dst string) (*os.File, error) {
	for attempt := 1; ; attempt++ {
		err := os.MkdirAll(dir, dirMode)
		if err == nil {
			var tmp *os.File
			if tmp, err = os.CreateTemp(dir, "."+filepath.Base(dst)+".tmp-*"); err == nil {
				return tmp, nil
			}
			err = fmt.Errorf("writing %s: %w", dst, err)
		} else {
			err = fmt.Errorf("writing %s: creating its directory: %w", dst, err)
		}
		if attempt == 5 || !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
}

// Delete removes the file at key, then each directory the key's path leads through that it left
// empty, up to but not including the root, so a removed issuer leaves no empty .well-known or
// openid/v1 behind. A missing file is not an error. It works through an os.Root, so a symbolic
// link below the root can never lead it to remove anything outside the root; a symbolic link at
// key is removed itself, never its target; a directory at key is refused (it is not an object),
// and a directory that is a symbolic link is never pruned.
func (s *Sink) Delete(ctx context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("deleting %s: %w", p, err)
	}
	root, err := os.OpenRoot(s.root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // nothing was ever written
	}
	if err != nil {
		return fmt.Errorf("deleting %s: %w", p, err)
	}
	defer root.Close()
	name := filepath.FromSlash(key)
	info, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil // no file, or a file where the key needs a directory: nothing at key
	}
	if err != nil {
		return fmt.Errorf("deleting %s: %w", p, err)
	}
	if info.IsDir() {
		return fmt.Errorf("deleting %s: it is a directory, not a document", p)
	}
	if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting %s: %w", p, err)
	}
	// Prune emptied directories: best effort, stopping at the first that is not empty (or not a
	// plain directory, or cannot be removed).
	dir := filepath.Dir(name)
	for dir != "." {
		if fi, err := root.Lstat(dir); err != nil || !fi.IsDir() || root.Remove(dir) != nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	return syncRootDir(root, dir)
}

// syncRootDir makes a removal in dir (below root) durable. A concurrent Delete may have removed
// dir meanwhile, once empty: then the closest directory still there is flushed instead.
func syncRootDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	for errors.Is(err, fs.ErrNotExist) && dir != "." {
		dir = filepath.Dir(dir)
		d, err = root.Open(dir)
	}
	if err != nil {
		return fmt.Errorf("flushing directory %s: %w", filepath.Join(root.Name(), dir), err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("flushing directory %s: %w", filepath.Join(root.Name(), dir), err)
	}
	return nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("flushing directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("flushing directory %s: %w", dir, err)
	}
	return nil
}
