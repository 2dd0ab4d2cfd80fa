package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"time"
)

// maxDocument bounds what is read of a document: both are a few kilobytes.
const maxDocument = 1 << 20

// NewHTTPClient returns a client that trusts roots (nil: the system roots), goes through
// HTTPS_PROXY like thumbprint.Fetcher, and does not follow redirects to plain HTTP.
func NewHTTPClient(roots *x509.CertPool) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Scheme != "https" && via[0].URL.Scheme == "https" {
				return fmt.Errorf("redirect from HTTPS to %s", req.URL.Redacted())
			}
			if len(via) >= 5 {
				return fmt.Errorf("more than %d redirects", len(via))
			}
			return nil
		},
	}
}

// fetched is one HTTP answer.
type fetched struct {
	status   int
	header   http.Header
	body     []byte
	duration time.Duration
}

// get fetches u within timeout, reading at most maxDocument bytes.
func get(ctx context.Context, c *http.Client, u string, timeout time.Duration) (*fetched, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("no answer within %s (STS gives up after about 5 s): %w", timeout, err)
		}
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument))
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("body not complete within %s (STS gives up after about 5 s): %w", timeout, err)
		}
		return nil, fmt.Errorf("reading the body: %w", err)
	}
	return &fetched{status: resp.StatusCode, header: resp.Header, body: body, duration: time.Since(start)}, nil
}
