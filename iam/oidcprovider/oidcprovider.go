// Package oidcprovider registers an issuer with AWS IAM as an OpenID Connect provider and keeps it
// registered: it finds the provider for the exact issuer URL, plans what differs from the desired
// state (audiences, thumbprints, tags), and applies that plan through a narrow interface around the
// IAM client. Reconciling twice changes nothing the second time.
package oidcprovider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/smithy-go"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam"
)

// API is the part of the AWS IAM client registration uses; *iam.Client implements it. Keeping it
// this narrow documents exactly what the issuer calls (see iam.RegistrationPolicy) and lets tests
// substitute a fake.
type API interface {
	ListOpenIDConnectProviders(context.Context, *awsiam.ListOpenIDConnectProvidersInput, ...func(*awsiam.Options)) (*awsiam.ListOpenIDConnectProvidersOutput, error)
	GetOpenIDConnectProvider(context.Context, *awsiam.GetOpenIDConnectProviderInput, ...func(*awsiam.Options)) (*awsiam.GetOpenIDConnectProviderOutput, error)
	CreateOpenIDConnectProvider(context.Context, *awsiam.CreateOpenIDConnectProviderInput, ...func(*awsiam.Options)) (*awsiam.CreateOpenIDConnectProviderOutput, error)
	UpdateOpenIDConnectProviderThumbprint(context.Context, *awsiam.UpdateOpenIDConnectProviderThumbprintInput, ...func(*awsiam.Options)) (*awsiam.UpdateOpenIDConnectProviderThumbprintOutput, error)
	AddClientIDToOpenIDConnectProvider(context.Context, *awsiam.AddClientIDToOpenIDConnectProviderInput, ...func(*awsiam.Options)) (*awsiam.AddClientIDToOpenIDConnectProviderOutput, error)
	RemoveClientIDFromOpenIDConnectProvider(context.Context, *awsiam.RemoveClientIDFromOpenIDConnectProviderInput, ...func(*awsiam.Options)) (*awsiam.RemoveClientIDFromOpenIDConnectProviderOutput, error)
	TagOpenIDConnectProvider(context.Context, *awsiam.TagOpenIDConnectProviderInput, ...func(*awsiam.Options)) (*awsiam.TagOpenIDConnectProviderOutput, error)
}

// Limits IAM puts on tags.
const (
	maxTags           = 50
	maxTagKeyLength   = 128
	maxTagValueLength = 256
)

// Desired is the state the provider should have.
type Desired struct {
	// URL is the issuer URL, byte for byte the tokens' iss.
	URL string
	// Audiences are the client IDs; exactly these are registered (missing ones added, others
	// removed).
	Audiences []string
	// Thumbprints are those the issuer's endpoints present now (fetched or pinned), at most 5,
	// 40 hex digits each. They are registered first; thumbprints registered before are kept
	// after them (up to IAM's 5 in all, the oldest dropped first) so that a CA change never leaves
	// STS without the thumbprint of a chain still being served somewhere, unless PruneThumbprints.
	Thumbprints []string
	// PruneThumbprints removes registered thumbprints that are not in Thumbprints: for after a CA
	// change has finished everywhere.
	PruneThumbprints bool
	// Tags are set on the provider (added, or updated when their value differs). Tags not named
	// here are left alone.
	Tags map[string]string
	// CreateTags are set only when the provider is created, never on one that exists already: they
	// mark what the caller created (a managed-by tag), which a provider found in place must not
	// acquire. Their keys must not be in Tags.
	CreateTags map[string]string
}

// creationTags are the tags a new provider gets: Tags and CreateTags.
func (d Desired) creationTags() map[string]string {
	if len(d.CreateTags) == 0 {
		return d.Tags
	}
	out := maps.Clone(d.Tags)
	if out == nil {
		out = make(map[string]string, len(d.CreateTags))
	}
	maps.Copy(out, d.CreateTags)
	return out
}

// normalized validates d against IAM's rules and returns it with lower-case, de-duplicated
// thumbprints.
func (d Desired) normalized() (Desired, error) {
	if err := iam.ValidateProviderURL(d.URL); err != nil {
		return d, err
	}
	if err := iam.ValidateAudiences(d.Audiences); err != nil {
		return d, err
	}
	if len(d.Thumbprints) == 0 {
		return d, errors.New("no thumbprint: fetch one from the issuer's host or pin it with --thumbprint")
	}
	var tps []string
	for _, t := range d.Thumbprints {
		n, err := iam.NormalizeThumbprint(t)
		if err != nil {
			return d, err
		}
		if !slices.Contains(tps, n) {
			tps = append(tps, n)
		}
	}
	if len(tps) > iam.MaxThumbprints {
		return d, fmt.Errorf("%d thumbprints: AWS IAM keeps at most %d per provider", len(tps), iam.MaxThumbprints)
	}
	for k := range d.CreateTags {
		if _, dup := lookupTag(d.Tags, k); dup {
			return d, fmt.Errorf("tag key %q is both a tag and a creation tag", k)
		}
	}
	all := d.creationTags()
	if len(all) > maxTags {
		return d, fmt.Errorf("%d tags: AWS IAM allows at most %d per resource", len(all), maxTags)
	}
	for k, v := range all {
		switch {
		case k == "" || len(k) > maxTagKeyLength:
			return d, fmt.Errorf("tag key %q: AWS IAM wants 1 to %d characters", k, maxTagKeyLength)
		case strings.HasPrefix(strings.ToLower(k), "aws:"):
			return d, fmt.Errorf("tag key %q: the aws: prefix is reserved for AWS", k)
		case len(v) > maxTagValueLength:
			return d, fmt.Errorf("tag %q: value longer than %d characters", k, maxTagValueLength)
		}
	}
	d.Thumbprints = tps
	d.Audiences = slices.Clone(d.Audiences)
	d.Tags = maps.Clone(d.Tags)
	d.CreateTags = maps.Clone(d.CreateTags)
	return d, nil
}

// Provider is a registered provider as IAM reports it.
type Provider struct {
	ARN         string
	Audiences   []string
	Thumbprints []string
	Tags        map[string]string
}

// Reconciler plans and applies registrations through an API.
type Reconciler struct {
	api    API
	logger *slog.Logger
}

// New returns a Reconciler using api.
func New(api API, logger *slog.Logger) *Reconciler {
	return &Reconciler{api: api, logger: logger}
}

// Find returns the provider registered for exactly issuerURL, or nil when there is none. IAM names
// a provider by its URL without scheme, so the ARN's suffix identifies it; no account ID needed.
func (r *Reconciler) Find(ctx context.Context, issuerURL string) (*Provider, error) {
	want := iam.HostPath(issuerURL)
	list, err := r.api.ListOpenIDConnectProviders(ctx, &awsiam.ListOpenIDConnectProvidersInput{})
	if err != nil {
		return nil, wrapAPIError("iam:ListOpenIDConnectProviders", "listing OIDC providers", issuerURL, err)
	}
	for _, entry := range list.OpenIDConnectProviderList {
		arn := aws.ToString(entry.Arn)
		if hp, ok := iam.HostPathFromARN(arn); !ok || hp != want {
			continue
		}
		out, err := r.api.GetOpenIDConnectProvider(ctx, &awsiam.GetOpenIDConnectProviderInput{OpenIDConnectProviderArn: aws.String(arn)})
		if err != nil {
			// Also NoSuchEntity: listed but not readable means it is being created or deleted
			// right now (IAM is eventually consistent); planning a creation would be wrong in the
			// first case, and the next reconcile sees the second.
			return nil, wrapAPIError("iam:GetOpenIDConnectProvider", "reading OIDC provider "+arn, issuerURL, err)
		}
		p := &Provider{
			ARN:         arn,
			Audiences:   out.ClientIDList,
			Thumbprints: out.ThumbprintList,
			Tags:        make(map[string]string, len(out.Tags)),
		}
		for _, t := range out.Tags {
			p.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
		return p, nil
	}
	return nil, nil
}

// Plan compares the registered provider with d and says what Apply would change. It only reads.
func (r *Reconciler) Plan(ctx context.Context, d Desired) (*Plan, error) {
	d, err := d.normalized()
	if err != nil {
		return nil, err
	}
	current, err := r.Find(ctx, d.URL)
	if err != nil {
		return nil, err
	}
	return plan(d, current), nil
}

// Reconcile plans and applies, and returns the plan it applied with the provider's ARN filled in.
func (r *Reconciler) Reconcile(ctx context.Context, d Desired) (*Plan, error) {
	p, err := r.Plan(ctx, d)
	if err != nil {
		return nil, err
	}
	if err := r.Apply(ctx, p); err != nil {
		return p, err
	}
	return p, nil
}

// Apply makes the changes p lists. Thumbprints go first (the change that keeps STS working),
// audiences are added before any is removed, tags last. On creation p.ARN is set.
func (r *Reconciler) Apply(ctx context.Context, p *Plan) error {
	d := p.Desired
	if p.Create {
		in := &awsiam.CreateOpenIDConnectProviderInput{
			Url:            aws.String(d.URL),
			ClientIDList:   d.Audiences,
			ThumbprintList: p.Thumbprints,
			Tags:           tagList(d.creationTags(), sortedKeys(d.creationTags())),
		}
		out, err := r.api.CreateOpenIDConnectProvider(ctx, in)
		if err != nil {
			return wrapAPIError("iam:CreateOpenIDConnectProvider", "creating the OIDC provider for "+d.URL, d.URL, err)
		}
		p.ARN = aws.ToString(out.OpenIDConnectProviderArn)
		r.logger.Info("created IAM OIDC provider", "arn", p.ARN, "audiences", d.Audiences, "thumbprints", p.Thumbprints)
		return nil
	}
	arn := aws.String(p.ARN)
	if p.Thumbprints != nil {
		_, err := r.api.UpdateOpenIDConnectProviderThumbprint(ctx, &awsiam.UpdateOpenIDConnectProviderThumbprintInput{
			OpenIDConnectProviderArn: arn,
			ThumbprintList:           p.Thumbprints,
		})
		if err != nil {
			return wrapAPIError("iam:UpdateOpenIDConnectProviderThumbprint", "replacing the thumbprints of "+p.ARN, d.URL, err)
		}
		r.logger.Info("updated IAM OIDC provider thumbprints", "arn", p.ARN, "thumbprints", p.Thumbprints, "dropped", p.DroppedThumbprints)
	}
	for _, a := range p.AddAudiences {
		_, err := r.api.AddClientIDToOpenIDConnectProvider(ctx, &awsiam.AddClientIDToOpenIDConnectProviderInput{
			OpenIDConnectProviderArn: arn,
			ClientID:                 aws.String(a),
		})
		if err != nil {
			return wrapAPIError("iam:AddClientIDToOpenIDConnectProvider", fmt.Sprintf("adding audience %q to %s", a, p.ARN), d.URL, err)
		}
		r.logger.Info("added audience to IAM OIDC provider", "arn", p.ARN, "audience", a)
	}
	for _, a := range p.RemoveAudiences {
		_, err := r.api.RemoveClientIDFromOpenIDConnectProvider(ctx, &awsiam.RemoveClientIDFromOpenIDConnectProviderInput{
			OpenIDConnectProviderArn: arn,
			ClientID:                 aws.String(a),
		})
		if err != nil {
			return wrapAPIError("iam:RemoveClientIDFromOpenIDConnectProvider", fmt.Sprintf("removing audience %q from %s", a, p.ARN), d.URL, err)
		}
		r.logger.Info("removed audience from IAM OIDC provider", "arn", p.ARN, "audience", a)
	}
	if len(p.SetTags) > 0 {
		_, err := r.api.TagOpenIDConnectProvider(ctx, &awsiam.TagOpenIDConnectProviderInput{
			OpenIDConnectProviderArn: arn,
			Tags:                     tagList(d.Tags, p.SetTags),
		})
		if err != nil {
			return wrapAPIError("iam:TagOpenIDConnectProvider", "tagging "+p.ARN, d.URL, err)
		}
		r.logger.Info("tagged IAM OIDC provider", "arn", p.ARN, "tags", p.SetTags)
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}

func tagList(tags map[string]string, keys []string) []types.Tag {
	if len(keys) == 0 {
		return nil
	}
	out := make([]types.Tag, 0, len(keys))
	for _, k := range keys {
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	return out
}

// AccessDeniedError is an IAM call AWS refused for lack of permission. Its message names the
// action and every action registration needs, so that the fix is one policy attachment.
type AccessDeniedError struct {
	// Action is the refused IAM action, e.g. "iam:CreateOpenIDConnectProvider".
	Action string
	// Doing says what was being done.
	Doing     string
	IssuerURL string
	Err       error
}

func (e *AccessDeniedError) Error() string {
	return fmt.Sprintf("AWS denied %s while %s: %v. Registering the issuer needs %s on %q and %s on %q "+
		"(print the policy to attach with: kube-oidc-issuer iam-policy --issuer-url %s)",
		e.Action, e.Doing, e.Err,
		strings.Join(iam.ListActions(), ", "), "*",
		strings.Join(iam.ProviderActions(), ", "), iam.ProviderARN("aws", "ACCOUNT_ID", e.IssuerURL),
		e.IssuerURL)
}

func (e *AccessDeniedError) Unwrap() error { return e.Err }

// wrapAPIError says what was being done, and turns an authorization failure into an
// *AccessDeniedError.
func wrapAPIError(action, doing, issuerURL string, err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess":
			return &AccessDeniedError{Action: action, Doing: doing, IssuerURL: issuerURL, Err: err}
		}
	}
	return fmt.Errorf("%s (%s): %w", doing, action, err)
}
