// Package signerstate is the key state of `kube-oidc-issuer signer`: the signer-mode lifecycle
// state (package lifecycle) read from the state Secret through the API server and kept in a local
// cache file, turned into the signer.Snapshot the external JWT signer serves.
//
// kube-apiserver cannot start without its signer, and the signer reads its keys through
// kube-apiserver: the cache breaks that cycle. A signer starts from its cache when it has one, so a
// control plane that is entirely down comes back from the cache alone; once the API server answers,
// the cache and the state Secret are reconciled by compare-and-swap (lifecycle.Store.Adopt: the
// higher generation wins, a state of another lineage is refused), and from then on every accepted
// change of the Secret is written to the cache before it is signed with.
package signerstate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/boundedread"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
)

// maxCacheSize is the largest cache file read: a state document, which a Secret bounds to 1 MiB.
const maxCacheSize = 1 << 20

// cacheMode is the only mode a cache file is written with and may have: it holds private keys.
const cacheMode fs.FileMode = 0o600

// ErrNoCache is matched by ReadCache's error when there is no file at the path.
var ErrNoCache = errors.New("no state cache")

// ReadCache reads a signer-mode state from the cache file at path. It refuses, with an error that
// never quotes the file: a missing file (ErrNoCache), anything but a regular file, a file readable
// or writable by anyone but its owner, more than 1 MiB, a document that does not parse, and a
// state that is not a signer-mode state.
func ReadCache(path string) (*lifecycle.State, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s", ErrNoCache, path)
	}
	if err != nil {
		return nil, fmt.Errorf("reading state cache: %w", err)
	}
	if perm := fi.Mode().Perm(); fi.Mode().IsRegular() && perm&^cacheMode != 0 {
		return nil, fmt.Errorf("state cache %s has mode %#o: it holds private keys, so it must be %#o (owner only): chmod 600 it after checking who could read it", path, perm, cacheMode)
	}
	data, err := boundedread.ReadFile(path, maxCacheSize)
	if err != nil {
		return nil, fmt.Errorf("reading state cache: %w", err)
	}
	st, err := lifecycle.ParseDocument(data)
	if err != nil {
		return nil, fmt.Errorf("state cache %s is corrupt (the signer will not sign with it, nor write it to the state Secret): %w", path, err)
	}
	if !st.Signer {
		return nil, fmt.Errorf("state cache %s holds no signer-mode state: create one with `kube-oidc-issuer signer init`", path)
	}
	return st, nil
}

// WriteCache writes st to path atomically: a new file in the same directory, mode 0600, synced,
// then renamed over path, and the directory synced, so that a crash leaves the old cache or the
// new one, never a torn one.
func WriteCache(path string, st *lifecycle.State) error {
	doc, err := lifecycle.MarshalDocument(st)
	if err != nil {
		return fmt.Errorf("writing state cache: %w", err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing state cache: %w", err)
	}
	tmp := f.Name()
	done := false
	defer func() {
		if !done {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	// CreateTemp creates 0600 already; Chmod makes it independent of that detail.
	if err := f.Chmod(cacheMode); err != nil {
		return fmt.Errorf("writing state cache: %w", err)
	}
	if _, err := f.Write(doc); err != nil {
		return fmt.Errorf("writing state cache: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing state cache: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing state cache: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing state cache: %w", err)
	}
	done = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
