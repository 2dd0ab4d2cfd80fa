package integration

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage/s3sink"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage/storagetest"
)

// s3Sink builds the issuer's S3 sink for a store, as `--mirror s3://BUCKET --s3-endpoint URL
// --s3-path-style` does, with the store's admin credentials.
func (s *s3Store) s3Sink(t *testing.T, bucket, prefix string, manage bool) *s3sink.Sink {
	t.Helper()
	for _, kv := range s.awsEnv {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	// No shared config or credentials file of the developer's may leak in.
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	t.Setenv("AWS_CA_BUNDLE", s.caFile)
	client, err := s3sink.NewClient(context.Background(), s3sink.ClientConfig{Endpoint: s.endpoint, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := s3sink.New(client, s3sink.Config{Bucket: bucket, Prefix: prefix, ManagePolicy: manage})
	if err != nil {
		t.Fatal(err)
	}
	return sink
}

// TestMirrorConformanceS3 runs the sink conformance suite against moto_server's S3 and MinIO.
// Reads are anonymous GETs, allowed by a bucket policy.
func TestMirrorConformanceS3(t *testing.T) {
	stores := map[string]func(t *testing.T) *s3Store{
		"moto":  startMotoStore,
		"MinIO": func(t *testing.T) *s3Store { s, _ := startMinIOStore(t, nil, nil); return s },
	}
	for _, name := range []string{"moto", "MinIO"} {
		t.Run(name, func(t *testing.T) {
			store := stores[name](t)
			const bucket = "conformance"
			store.createBucket(t, bucket)
			ctx := context.Background()
			if _, err := store.admin.PutBucketPolicy(ctx, &s3.PutBucketPolicyInput{Bucket: aws.String(bucket), Policy: aws.String(publicReadPolicy(bucket, ""))}); err != nil {
				t.Fatal(err)
			}
			var n atomic.Int32
			storagetest.Run(t, func(t *testing.T) storagetest.Harness {
				prefix := fmt.Sprintf("run-%d/", n.Add(1))
				return storagetest.Harness{
					Sink:  store.s3Sink(t, bucket, prefix, false),
					Fetch: store.fetcher(bucket, prefix),
					Remove: func(ctx context.Context, key string) error {
						_, err := store.admin.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(prefix + key)})
						return err
					},
				}
			})
		})
	}
}

// TestMirrorPublicReadByBucketPolicyOnly: without a policy the mirrored objects are private and
// the sink says what is missing; with --s3-manage-bucket-policy it adds one statement (keeping the
// others) and then an anonymous GET returns the exact bytes and headers of both documents, and
// nothing else in the bucket. No ACL is ever set.
func TestMirrorPublicReadByBucketPolicyOnly(t *testing.T) {
	for _, name := range []string{"moto", "MinIO"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var store *s3Store
			if name == "moto" {
				store = startMotoStore(t)
			} else {
				store, _ = startMinIOStore(t, nil, nil)
			}
			const bucket, prefix = "oidc", "cluster-a/"
			store.createBucket(t, bucket)
			other := `{"Sid":"KeepMe","Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::oidc/shared/*"}`
			if _, err := store.admin.PutBucketPolicy(ctx, &s3.PutBucketPolicyInput{Bucket: aws.String(bucket),
				Policy: aws.String(`{"Version":"2012-10-17","Statement":[` + other + `]}`)}); err != nil {
				t.Fatal(err)
			}
			if _, err := store.admin.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(prefix + "private.txt"), Body: strings.NewReader("not for relying parties")}); err != nil {
				t.Fatal(err)
			}
			set := storagetest.NewSets(t).First

			checkOnly := store.s3Sink(t, bucket, prefix, false)
			if _, err := storage.Publish(ctx, checkOnly, set); err != nil {
				t.Fatal(err)
			}
			rep, err := checkOnly.EnsurePublicRead(ctx, storage.Keys())
			if err != nil {
				t.Fatal(err)
			}
			if rep.Public || rep.Managed || len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], "--s3-manage-bucket-policy") ||
				!strings.Contains(rep.Problems[0], `"Resource":["arn:aws:s3:::oidc/cluster-a/openid/v1/jwks","arn:aws:s3:::oidc/cluster-a/.well-known/openid-configuration"]`) {
				t.Fatalf("check-only report %+v", rep)
			}
			for _, o := range storage.Objects(set) {
				if resp, body, err := store.get(ctx, bucket, prefix+o.Key); err != nil || resp.StatusCode != http.StatusForbidden {
					t.Fatalf("anonymous GET before the policy: %v %v %s, want 403", err, resp.Status, body)
				}
			}

			managed := store.s3Sink(t, bucket, prefix, true)
			for range 2 { // the second call finds the grant and changes nothing
				rep, err = managed.EnsurePublicRead(ctx, storage.Keys())
				if err != nil {
					t.Fatal(err)
				}
				if !rep.Public || !rep.Managed || len(rep.Problems) != 0 {
					t.Fatalf("managed report %+v", rep)
				}
			}
			pol, err := store.admin.GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: aws.String(bucket)})
			if err != nil {
				t.Fatal(err)
			}
			if p := aws.ToString(pol.Policy); !strings.Contains(p, "KeepMe") || strings.Count(p, "KubeOIDCIssuerPublicRead") != 1 {
				t.Fatalf("bucket policy after managing it: %s", p)
			}
			t.Logf("%s bucket policy: %s", name, aws.ToString(pol.Policy))

			for _, o := range storage.Objects(set) {
				resp, body, err := store.get(ctx, bucket, prefix+o.Key)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != http.StatusOK || !bytes.Equal(body, o.Body) {
					t.Fatalf("anonymous GET %s: %s %q, want 200 and the document", o.Key, resp.Status, body)
				}
				if ct, cc := resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"); ct != o.ContentType || cc != o.CacheControl {
					t.Fatalf("anonymous GET %s: Content-Type %q, Cache-Control %q; want %q, %q", o.Key, ct, cc, o.ContentType, o.CacheControl)
				}
			}
			if resp, _, err := store.get(ctx, bucket, prefix+"private.txt"); err != nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("anonymous GET of another object in the bucket: %v %v, want 403", err, resp.Status)
			}
			if name == "moto" {
				// Public because of the policy, not an ACL: the objects' ACLs grant only the owner.
				for _, o := range storage.Objects(set) {
					acl, err := store.admin.GetObjectAcl(ctx, &s3.GetObjectAclInput{Bucket: aws.String(bucket), Key: aws.String(prefix + o.Key)})
					if err != nil {
						t.Fatal(err)
					}
					for _, g := range acl.Grants {
						if g.Grantee != nil && g.Grantee.Type == types.TypeGroup {
							t.Fatalf("%s has an ACL grant to group %s", o.Key, aws.ToString(g.Grantee.URI))
						}
					}
				}
			}
		})
	}
}

// TestMirrorExplainsPublicAccessBlock: a Public Access Block that makes the bucket private is
// reported (check mode) or refused with the fix (manage mode). moto implements the API; MinIO
// does not have it.
func TestMirrorExplainsPublicAccessBlock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := startMotoStore(t)
	const bucket = "blocked"
	store.createBucket(t, bucket)
	if _, err := store.admin.PutPublicAccessBlock(ctx, &s3.PutPublicAccessBlockInput{Bucket: aws.String(bucket),
		PublicAccessBlockConfiguration: &types.PublicAccessBlockConfiguration{
			BlockPublicAcls: aws.Bool(true), IgnorePublicAcls: aws.Bool(true), BlockPublicPolicy: aws.Bool(true), RestrictPublicBuckets: aws.Bool(true),
		}}); err != nil {
		t.Fatal(err)
	}
	rep, err := store.s3Sink(t, bucket, "", false).EnsurePublicRead(ctx, storage.Keys())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Public || !strings.Contains(strings.Join(rep.Problems, "\n"), "RestrictPublicBuckets=true") {
		t.Fatalf("report %+v: want the Public Access Block explained", rep)
	}
	_, err = store.s3Sink(t, bucket, "", true).EnsurePublicRead(ctx, storage.Keys())
	if err == nil || !strings.Contains(err.Error(), "BlockPublicPolicy=true") || !strings.Contains(err.Error(), "put-public-access-block") {
		t.Fatalf("manage mode with BlockPublicPolicy: %v, want the reason and the fix", err)
	}
}
