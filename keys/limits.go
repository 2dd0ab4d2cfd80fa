package keys

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/boundedread"
)

// MaxFileSize bounds every key input read from a file or standard input (serve's --key-file, the
// jwks and discovery commands' --public-key): key files are a few KiB, a verification bundle a
// few dozen, and a Secret, the other way keys arrive, cannot exceed 1 MiB either.
const MaxFileSize = 1 << 20

// ReadFile reads the key file at path for parsing: a regular file of at most MaxFileSize bytes.
// It never blocks, whatever is at the path (a FIFO or a device is refused at once, see package
// internal/boundedread), so neither a key source nor a command can be stalled by it. Errors name
// path and what is wrong with it ("is a named pipe (FIFO), not a regular file", "larger than
// 1 MiB; refusing to read it"); they never quote the content.
func ReadFile(path string) ([]byte, error) {
	data, err := boundedread.ReadFile(path, MaxFileSize)
	if err != nil {
		// The message names the path once, as this wrapper does: drop the *fs.PathError around
		// the reason (errors.Is still sees fs.ErrNotExist, boundedread.ErrNotRegular, ...).
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Path == path {
			err = pe.Err
		}
		return nil, fmt.Errorf("reading key file %s: %w", path, err)
	}
	return data, nil
}

// AWSMaxJWKSKeys is the most keys one JWKS may hold for AWS STS: with more, STS fails to find the
// token's kid in it and rejects the token with "InvalidIdentityToken: Couldn't retrieve
// verification key from your identity provider" (found by SPIRE users, spiffe/spire#4699; AWS does
// not document the limit). It counts JWKS entries, so --legacy-empty-kid, which publishes every key
// twice, halves the number of keys that fit.
//
// The issuer warns above it (the collector, the jwks command) and doctor fails above it, but
// nothing refuses to publish: dropping keys to fit would reject tokens signed by the dropped keys
// for every relying party, AWS or not, which is worse than AWS alone failing.
const AWSMaxJWKSKeys = 100

// JWKSEntries is how many keys RenderJWKS writes for s with opts: every key once, twice with
// LegacyEmptyKID. It is what AWSMaxJWKSKeys is compared with.
func JWKSEntries(s Set, opts JWKSOptions) int {
	if opts.LegacyEmptyKID {
		return 2 * s.Len()
	}
	return s.Len()
}
