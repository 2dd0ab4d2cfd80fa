// Package s3sink mirrors the issuer's documents into an S3 bucket (--mirror s3://BUCKET[/PREFIX])
// with aws-sdk-go-v2, on AWS or an S3-compatible store (MinIO, moto).
//
// Objects get the documents' Content-Type and Cache-Control, and their SHA-256 in the user
// metadata field "sha256" (x-amz-meta-sha256), so an unchanged document is recognised with one
// HEAD request. Public read is granted by a bucket policy on exactly the mirrored objects, never
// by ACLs (S3 blocks public ACLs on new buckets since April 2023): managed when asked
// (Config.ManagePolicy), otherwise checked and explained.
package s3sink

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage"
)

// MetadataSHA256 is the user-metadata key holding the hex SHA-256 of an object's body.
const MetadataSHA256 = "sha256"

// ClientConfig configures the S3 client. Everything not set here comes from the SDK's default
// chain: AWS_REGION, AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, AWS_CA_BUNDLE (an endpoint with a
// private CA), static keys in AWS_ACCESS_KEY_ID, shared config and credentials files, web
// identity (IRSA: AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE), container and instance credentials.
type ClientConfig struct {
	// Region overrides the SDK's region. If neither gives one, RegionHint is used, then
	// us-east-1 when Endpoint is set (S3-compatible stores rarely care).
	Region     string
	RegionHint string
	// Endpoint overrides the S3 endpoint (https://minio.example.com:9000).
	Endpoint string
	// PathStyle addresses buckets as ENDPOINT/BUCKET instead of BUCKET.ENDPOINT.
	PathStyle bool
}

// NewClient builds an S3 client from the SDK's default configuration chain and c.
func NewClient(ctx context.Context, c ClientConfig) (*s3.Client, error) {
	var opts []func(*config.LoadOptions) error
	if c.Region != "" {
		opts = append(opts, config.WithRegion(c.Region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("loading AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = c.RegionHint
	}
	if cfg.Region == "" && (c.Endpoint != "" || os.Getenv("AWS_ENDPOINT_URL_S3") != "" || cfg.BaseEndpoint != nil) {
		cfg.Region = "us-east-1"
	}
	if cfg.Region == "" {
		return nil, errors.New("no AWS region for S3: set --s3-region or AWS_REGION")
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		o.UsePathStyle = c.PathStyle
	}), nil
}

// Config configures a Sink.
type Config struct {
	Bucket string
	// Prefix is prepended to every key; "" or ending with "/".
	Prefix string
	// ManagePolicy makes EnsurePublicRead add a statement granting anonymous s3:GetObject on the
	// mirrored objects to the bucket policy (keeping every other statement). Without it the
	// policy is only checked.
	ManagePolicy bool
}

// Sink stores objects in one bucket under one prefix.
type Sink struct {
	client    *s3.Client
	cfg       Config
	partition string
}

var (
	_ storage.Sink          = (*Sink)(nil)
	_ storage.AccessManager = (*Sink)(nil)
)

// New returns a sink writing through client.
func New(client *s3.Client, cfg Config) (*Sink, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("S3 sink: no bucket")
	}
	if cfg.Prefix != "" && cfg.Prefix[len(cfg.Prefix)-1] != '/' {
		return nil, fmt.Errorf("S3 sink: prefix %q must end with a slash", cfg.Prefix)
	}
	return &Sink{client: client, cfg: cfg, partition: Partition(client.Options().Region)}, nil
}

// String is s3://BUCKET/PREFIX.
func (s *Sink) String() string {
	out := "s3://" + s.cfg.Bucket
	if s.cfg.Prefix != "" {
		out += "/" + s.cfg.Prefix[:len(s.cfg.Prefix)-1]
	}
	return out
}

// Location is s3://BUCKET/PREFIXKEY.
func (s *Sink) Location(key string) string { return "s3://" + s.cfg.Bucket + "/" + s.cfg.Prefix + key }

func (s *Sink) objectKey(key string) string { return s.cfg.Prefix + key }

// Stat reads the object's headers and recorded SHA-256 with a HEAD request.
func (s *Sink) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.objectKey(key))})
	if err != nil {
		var nf *types.NotFound
		if errors.As(err, &nf) || isCode(err, "NoSuchKey", "NotFound") {
			return storage.ObjectInfo{}, fmt.Errorf("reading %s: %w", s.Location(key), storage.ErrNotFound)
		}
		return storage.ObjectInfo{}, fmt.Errorf("reading %s: %w", s.Location(key), err)
	}
	return storage.ObjectInfo{
		SHA256:       out.Metadata[MetadataSHA256],
		Headers:      true,
		ContentType:  aws.ToString(out.ContentType),
		CacheControl: aws.ToString(out.CacheControl),
	}, nil
}

// Put uploads o with its headers, its SHA-256 as metadata, and the SHA-256 checksum S3 verifies
// before storing: a body damaged in transit is refused, never published.
func (s *Sink) Put(ctx context.Context, o storage.Object) error {
	sum, err := hex.DecodeString(o.SHA256)
	if err != nil || len(sum) != 32 {
		return fmt.Errorf("writing %s: object has no valid SHA-256", s.Location(o.Key))
	}
	_, err = s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:         aws.String(s.cfg.Bucket),
		Key:            aws.String(s.objectKey(o.Key)),
		Body:           bytes.NewReader(o.Body),
		ContentLength:  aws.Int64(int64(len(o.Body))),
		ContentType:    aws.String(o.ContentType),
		CacheControl:   aws.String(o.CacheControl),
		ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(sum)),
		Metadata:       map[string]string{MetadataSHA256: o.SHA256},
	})
	if err != nil {
		return fmt.Errorf("writing %s: %w", s.Location(o.Key), err)
	}
	return nil
}

// Delete removes the object with DeleteObject. S3 answers the removal of a missing key with
// success; a NoSuchKey or NotFound answer (some S3-compatible stores) counts as success too. It
// names exactly one key under the sink's prefix, never a listing or a batch, so nothing else can
// go with it. In a bucket with versioning S3 adds a delete marker: readers allowed only
// s3:GetObject then get a 404, and the older versions stay until a lifecycle rule expires them.
// The role needs s3:DeleteObject on the object.
func (s *Sink) Delete(ctx context.Context, key string) error {
	if key == "" {
		return fmt.Errorf("deleting from %s: empty object key", s)
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.objectKey(key))})
	if err != nil {
		var nk *types.NoSuchKey
		var nf *types.NotFound
		if errors.As(err, &nk) || errors.As(err, &nf) || isCode(err, "NoSuchKey", "NotFound") {
			return nil
		}
		return fmt.Errorf("deleting %s: %w", s.Location(key), err)
	}
	return nil
}

// isCode reports whether err is an S3 API error with one of codes.
func isCode(err error, codes ...string) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	for _, c := range codes {
		if ae.ErrorCode() == c {
			return true
		}
	}
	return false
}

// httpStatus is the HTTP status of a failed S3 call, or 0.
func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}
