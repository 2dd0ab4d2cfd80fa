package oidcprovider

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/smithy-go"
)

// fakeIAM is an in-memory API for unit tests: one account, providers by ARN, every call recorded.
// deny makes the named action fail with AccessDenied. The real IAM behaviour is proved against
// moto_server in integration/iam_test.go.
type fakeIAM struct {
	mu        sync.Mutex
	providers map[string]*Provider
	calls     []string
	deny      string
}

func newFakeIAM() *fakeIAM { return &fakeIAM{providers: map[string]*Provider{}} }

func (f *fakeIAM) record(action string) error {
	f.calls = append(f.calls, action)
	if f.deny == action {
		return &smithy.GenericAPIError{Code: "AccessDenied", Message: "User: arn:aws:iam::123456789012:user/x is not authorized to perform: iam:" + action}
	}
	return nil
}

func (f *fakeIAM) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeIAM) get(arn string) (*Provider, error) {
	p, ok := f.providers[arn]
	if !ok {
		return nil, &types.NoSuchEntityException{Message: aws.String("no provider " + arn)}
	}
	return p, nil
}

func (f *fakeIAM) ListOpenIDConnectProviders(_ context.Context, _ *awsiam.ListOpenIDConnectProvidersInput, _ ...func(*awsiam.Options)) (*awsiam.ListOpenIDConnectProvidersOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("ListOpenIDConnectProviders"); err != nil {
		return nil, err
	}
	out := &awsiam.ListOpenIDConnectProvidersOutput{}
	for _, arn := range slices.Sorted(maps.Keys(f.providers)) {
		out.OpenIDConnectProviderList = append(out.OpenIDConnectProviderList, types.OpenIDConnectProviderListEntry{Arn: aws.String(arn)})
	}
	return out, nil
}

func (f *fakeIAM) GetOpenIDConnectProvider(_ context.Context, in *awsiam.GetOpenIDConnectProviderInput, _ ...func(*awsiam.Options)) (*awsiam.GetOpenIDConnectProviderOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("GetOpenIDConnectProvider"); err != nil {
		return nil, err
	}
	p, err := f.get(aws.ToString(in.OpenIDConnectProviderArn))
	if err != nil {
		return nil, err
	}
	out := &awsiam.GetOpenIDConnectProviderOutput{
		ClientIDList:   slices.Clone(p.Audiences),
		ThumbprintList: slices.Clone(p.Thumbprints),
	}
	for k, v := range p.Tags {
		out.Tags = append(out.Tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	return out, nil
}

func (f *fakeIAM) CreateOpenIDConnectProvider(_ context.Context, in *awsiam.CreateOpenIDConnectProviderInput, _ ...func(*awsiam.Options)) (*awsiam.CreateOpenIDConnectProviderOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("CreateOpenIDConnectProvider"); err != nil {
		return nil, err
	}
	arn := "arn:aws:iam::123456789012:oidc-provider/" + strings.TrimPrefix(aws.ToString(in.Url), "https://")
	if _, ok := f.providers[arn]; ok {
		return nil, &types.EntityAlreadyExistsException{Message: aws.String("exists")}
	}
	p := &Provider{ARN: arn, Audiences: slices.Clone(in.ClientIDList), Thumbprints: slices.Clone(in.ThumbprintList), Tags: map[string]string{}}
	for _, t := range in.Tags {
		p.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	f.providers[arn] = p
	return &awsiam.CreateOpenIDConnectProviderOutput{OpenIDConnectProviderArn: aws.String(arn)}, nil
}

func (f *fakeIAM) UpdateOpenIDConnectProviderThumbprint(_ context.Context, in *awsiam.UpdateOpenIDConnectProviderThumbprintInput, _ ...func(*awsiam.Options)) (*awsiam.UpdateOpenIDConnectProviderThumbprintOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("UpdateOpenIDConnectProviderThumbprint"); err != nil {
		return nil, err
	}
	p, err := f.get(aws.ToString(in.OpenIDConnectProviderArn))
	if err != nil {
		return nil, err
	}
	p.Thumbprints = slices.Clone(in.ThumbprintList)
	return &awsiam.UpdateOpenIDConnectProviderThumbprintOutput{}, nil
}

func (f *fakeIAM) AddClientIDToOpenIDConnectProvider(_ context.Context, in *awsiam.AddClientIDToOpenIDConnectProviderInput, _ ...func(*awsiam.Options)) (*awsiam.AddClientIDToOpenIDConnectProviderOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("AddClientIDToOpenIDConnectProvider"); err != nil {
		return nil, err
	}
	p, err := f.get(aws.ToString(in.OpenIDConnectProviderArn))
	if err != nil {
		return nil, err
	}
	if id := aws.ToString(in.ClientID); !slices.Contains(p.Audiences, id) {
		p.Audiences = append(p.Audiences, id)
	}
	return &awsiam.AddClientIDToOpenIDConnectProviderOutput{}, nil
}

func (f *fakeIAM) RemoveClientIDFromOpenIDConnectProvider(_ context.Context, in *awsiam.RemoveClientIDFromOpenIDConnectProviderInput, _ ...func(*awsiam.Options)) (*awsiam.RemoveClientIDFromOpenIDConnectProviderOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("RemoveClientIDFromOpenIDConnectProvider"); err != nil {
		return nil, err
	}
	p, err := f.get(aws.ToString(in.OpenIDConnectProviderArn))
	if err != nil {
		return nil, err
	}
	p.Audiences = slices.DeleteFunc(p.Audiences, func(a string) bool { return a == aws.ToString(in.ClientID) })
	return &awsiam.RemoveClientIDFromOpenIDConnectProviderOutput{}, nil
}

func (f *fakeIAM) TagOpenIDConnectProvider(_ context.Context, in *awsiam.TagOpenIDConnectProviderInput, _ ...func(*awsiam.Options)) (*awsiam.TagOpenIDConnectProviderOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("TagOpenIDConnectProvider"); err != nil {
		return nil, err
	}
	p, err := f.get(aws.ToString(in.OpenIDConnectProviderArn))
	if err != nil {
		return nil, err
	}
	for _, t := range in.Tags {
		p.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return &awsiam.TagOpenIDConnectProviderOutput{}, nil
}
