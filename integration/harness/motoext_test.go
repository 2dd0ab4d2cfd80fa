package harness

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/smithy-go"
)

// TestMotoIAMClientIDs: plain moto_server 5.2.1 answers AddClientIDToOpenIDConnectProvider with an
// error; through the extension both client-ID actions work on moto's own provider state (what
// GetOpenIDConnectProvider returns), idempotently, with NoSuchEntity for an unknown provider.
func TestMotoIAMClientIDs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts moto_server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const url = "https://oidc.example.com/ext"
	create := func(t *testing.T, c *awsiam.Client) string {
		t.Helper()
		out, err := c.CreateOpenIDConnectProvider(ctx, &awsiam.CreateOpenIDConnectProviderInput{
			Url:            aws.String(url),
			ClientIDList:   []string{"sts.amazonaws.com"},
			ThumbprintList: []string{strings.Repeat("a", 40)},
		})
		if err != nil {
			t.Fatalf("CreateOpenIDConnectProvider: %v", err)
		}
		return aws.ToString(out.OpenIDConnectProviderArn)
	}

	t.Run("plain moto lacks the actions", func(t *testing.T) {
		m, err := StartMoto(ctx, MotoConfig{LogPath: filepath.Join(t.TempDir(), "moto.log")})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Stop()
		c := awsiam.NewFromConfig(m.AWSConfig())
		arn := create(t, c)
		_, err = c.AddClientIDToOpenIDConnectProvider(ctx, &awsiam.AddClientIDToOpenIDConnectProviderInput{
			OpenIDConnectProviderArn: aws.String(arn), ClientID: aws.String("x"),
		})
		if err == nil {
			t.Fatal("moto_server implements AddClientIDToOpenIDConnectProvider now: the extension may be retired (it defers to moto's own)")
		}
	})

	t.Run("extension", func(t *testing.T) {
		m, err := StartMoto(ctx, MotoConfig{LogPath: filepath.Join(t.TempDir(), "moto.log"), IAMClientIDs: true})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Stop()
		if !strings.Contains(m.LogTail(4000), "moto_server_ext: added IAM actions") {
			t.Errorf("extension not announced in the log:\n%s", m.LogTail(4000))
		}
		c := awsiam.NewFromConfig(m.AWSConfig())
		arn := create(t, c)
		add := func(id string) error {
			_, err := c.AddClientIDToOpenIDConnectProvider(ctx, &awsiam.AddClientIDToOpenIDConnectProviderInput{OpenIDConnectProviderArn: aws.String(arn), ClientID: aws.String(id)})
			return err
		}
		remove := func(id string) error {
			_, err := c.RemoveClientIDFromOpenIDConnectProvider(ctx, &awsiam.RemoveClientIDFromOpenIDConnectProviderInput{OpenIDConnectProviderArn: aws.String(arn), ClientID: aws.String(id)})
			return err
		}
		audiences := func() []string {
			out, err := c.GetOpenIDConnectProvider(ctx, &awsiam.GetOpenIDConnectProviderInput{OpenIDConnectProviderArn: aws.String(arn)})
			if err != nil {
				t.Fatal(err)
			}
			return out.ClientIDList
		}
		steps := []struct {
			name string
			op   func() error
			want []string
		}{
			{"add", func() error { return add("vault") }, []string{"sts.amazonaws.com", "vault"}},
			{"add again is a no-op", func() error { return add("vault") }, []string{"sts.amazonaws.com", "vault"}},
			{"remove", func() error { return remove("sts.amazonaws.com") }, []string{"vault"}},
			{"remove absent is a no-op", func() error { return remove("sts.amazonaws.com") }, []string{"vault"}},
		}
		for _, s := range steps {
			if err := s.op(); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			if got := audiences(); !slices.Equal(got, s.want) {
				t.Fatalf("%s: client IDs %v, want %v", s.name, got, s.want)
			}
		}
		for name, err := range map[string]error{
			"empty client ID": add(""),
			"unknown provider": func() error {
				_, err := c.AddClientIDToOpenIDConnectProvider(ctx, &awsiam.AddClientIDToOpenIDConnectProviderInput{
					OpenIDConnectProviderArn: aws.String(arn + "-nope"), ClientID: aws.String("x"),
				})
				return err
			}(),
		} {
			var ae smithy.APIError
			if !errors.As(err, &ae) {
				t.Errorf("%s: error %v, want an IAM API error", name, err)
			}
		}
		var nse *types.NoSuchEntityException
		_, err = c.RemoveClientIDFromOpenIDConnectProvider(ctx, &awsiam.RemoveClientIDFromOpenIDConnectProviderInput{OpenIDConnectProviderArn: aws.String(arn + "-nope"), ClientID: aws.String("x")})
		if !errors.As(err, &nse) {
			t.Errorf("unknown provider: error %v, want NoSuchEntity", err)
		}
	})
}

// TestMotoExtNeedsMoto: without a Python that imports moto, StartMoto fails and says what to
// install, instead of the tests skipping quietly.
func TestMotoExtNeedsMoto(t *testing.T) {
	dir := t.TempDir()
	fakeMoto := filepath.Join(dir, "moto_server")
	if err := os.WriteFile(fakeMoto, []byte("#!/nonexistent/python3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	noMoto := filepath.Join(dir, "python3")
	if err := os.WriteFile(noMoto, []byte("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'moto'\" >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := StartMoto(ctx, MotoConfig{Binary: fakeMoto, IAMClientIDs: true})
	if err == nil {
		m.Stop()
		t.Fatal("started without moto")
	}
	for _, want := range []string{"no Python interpreter found that imports moto", "pip install 'moto[server]'", "No module named 'moto'"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
