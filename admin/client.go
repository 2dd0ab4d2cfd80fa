package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Client calls the admin API. Its http.Client carries the credentials (a bearer token, or a
// kubeconfig's authentication through client-go's transport wrappers) and trusts the admin
// listener's CA.
type Client struct {
	base  *url.URL
	http  *http.Client
	token string
	// keys is the path of the lifecycle the client acts on: PathPrefix, or a cluster's
	// (Cluster); err, when set, fails every call (a cluster name the API cannot serve).
	keys string
	err  error
}

// NewClient returns a client for the admin API at baseURL (https://HOST:PORT). token, when not
// empty, is sent as the bearer token; otherwise httpClient must add credentials itself.
func NewClient(baseURL string, httpClient *http.Client, token string) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("admin URL %q: want https://HOST:PORT", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return &Client{base: u, http: httpClient, token: token, keys: PathPrefix}, nil
}

// Cluster returns a client for the lifecycle of cluster namespace/cluster of a fleet-mode issuer
// (at ClusterPath(namespace, cluster)), with c's address, transport and credentials; c itself is
// unchanged (a client from NewClient keeps acting on PathPrefix). Names the admin API never serves
// (see ClusterPath) make every call of the returned client fail without sending a request.
func (c *Client) Cluster(namespace, cluster string) *Client {
	cc := *c
	cc.keys, cc.err = ClusterPath(namespace, cluster), nil
	if !plainSegment(namespace) || !plainSegment(cluster) {
		cc.err = fmt.Errorf("cluster %q/%q: namespace and cluster must be non-empty names of letters, digits, '-', '.', '_' or '~' (and not \".\" or \"..\")", namespace, cluster)
	}
	return &cc
}

// APIError is an error answer of the admin API.
type APIError struct {
	ErrorDetail
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, e.Reason, e.Message)
}

// List returns the lifecycle.
func (c *Client) List(ctx context.Context) (KeyList, error) {
	var out KeyList
	err := c.do(ctx, http.MethodGet, c.keys, nil, &out)
	return out, err
}

// Stage stages a new key for alg ("" is RS256).
func (c *Client) Stage(ctx context.Context, alg string) (KeyResult, error) {
	var out KeyResult
	err := c.do(ctx, http.MethodPost, c.keys, StageRequest{Algorithm: alg}, &out)
	return out, err
}

// Promote promotes the staged key kid.
func (c *Client) Promote(ctx context.Context, kid string, force bool) (KeyResult, error) {
	var out KeyResult
	err := c.do(ctx, http.MethodPost, c.keys+"/"+url.PathEscape(kid)+"/promote"+forceQuery(force), nil, &out)
	return out, err
}

// Remove withdraws a staged key or retires a previous one.
func (c *Client) Remove(ctx context.Context, kid string, force bool) (KeyResult, error) {
	var out KeyResult
	err := c.do(ctx, http.MethodDelete, c.keys+"/"+url.PathEscape(kid)+forceQuery(force), nil, &out)
	return out, err
}

func forceQuery(force bool) string {
	if force {
		return "?force=true"
	}
	return ""
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	if c.err != nil {
		return c.err
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encoding request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	target := *c.base
	p, q, _ := strings.Cut(path, "?")
	target.Path += p
	target.RawQuery = q
	req, err := http.NewRequestWithContext(ctx, method, target.String(), body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, target.Redacted(), err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, target.Redacted(), err)
	}
	if resp.StatusCode >= 300 {
		var eb ErrorBody
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Status != 0 {
			return &APIError{ErrorDetail: eb.Error}
		}
		return &APIError{ErrorDetail: ErrorDetail{Status: resp.StatusCode, Reason: http.StatusText(resp.StatusCode), Message: strings.TrimSpace(string(raw))}}
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: the answer is not what the admin API sends: %w", method, target.Redacted(), err)
	}
	return nil
}

// IsStatus reports whether err is an APIError with the HTTP status code.
func IsStatus(err error, code int) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == code
}
