package doctor

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
)

func checkMirrors(ctx context.Context, s *state) Result {
	if len(s.cfg.Mirrors) == 0 {
		return skip("no --mirror given")
	}
	var problems, ok []string
	for _, m := range s.cfg.Mirrors {
		for _, doc := range []struct {
			name, url string
			live      []byte
		}{
			{"discovery document", m.DiscoveryURL, s.discoveryRaw},
			{"JWKS", m.JWKSURL, s.jwksRaw},
		} {
			f, err := get(ctx, s.client, doc.url, s.cfg.Timeout)
			switch {
			case err != nil:
				problems = append(problems, fmt.Sprintf("%s %s: GET %s: %v", m.Name, doc.name, doc.url, err))
			case f.status == http.StatusForbidden || f.status == http.StatusUnauthorized:
				problems = append(problems, fmt.Sprintf("%s %s is not public: anonymous GET %s: HTTP %d", m.Name, doc.name, doc.url, f.status))
			case f.status != http.StatusOK:
				problems = append(problems, fmt.Sprintf("%s %s: anonymous GET %s: HTTP %d", m.Name, doc.name, doc.url, f.status))
			case doc.live == nil:
				ok = append(ok, fmt.Sprintf("%s %s public (live document unavailable to compare)", m.Name, doc.name))
			case !bytes.Equal(f.body, doc.live):
				problems = append(problems, fmt.Sprintf("%s %s is stale: differs from what the issuer serves", m.Name, doc.name))
			default:
				ok = append(ok, fmt.Sprintf("%s %s", m.Name, doc.name))
			}
		}
	}
	if len(problems) > 0 {
		return fail(ErrRetrieveKey, "run serve/mirror with this --mirror and --s3-manage-bucket-policy (public read through a bucket policy on exactly the two objects; S3 blocks public ACLs); check the mirror status on /readyz and the Block Public Access settings",
			"%s", strings.Join(problems, "; "))
	}
	return pass("public and current: %s", strings.Join(ok, ", "))
}
