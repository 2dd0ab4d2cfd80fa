package s3sink

import (
	"net/url"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		name, target, issuer, endpoint string
		want                           Location
		wantErr                        string
	}{
		{name: "path-style AWS URL", target: "s3://my-bucket", issuer: "https://s3.eu-west-1.amazonaws.com/my-bucket",
			want: Location{Bucket: "my-bucket", Region: "eu-west-1", Style: StylePath}},
		{name: "path-style with a prefix", target: "s3://my-bucket", issuer: "https://s3.eu-west-1.amazonaws.com/my-bucket/clusters/a",
			want: Location{Bucket: "my-bucket", Prefix: "clusters/a/", Region: "eu-west-1", Style: StylePath}},
		{name: "path-style, dotted bucket is fine", target: "s3://oidc.example.com", issuer: "https://s3.us-west-2.amazonaws.com/oidc.example.com",
			want: Location{Bucket: "oidc.example.com", Region: "us-west-2", Style: StylePath}},
		{name: "global endpoint is us-east-1", target: "s3://my-bucket", issuer: "https://s3.amazonaws.com/my-bucket",
			want: Location{Bucket: "my-bucket", Region: "us-east-1", Style: StylePath}},
		{name: "legacy dash endpoint", target: "s3://my-bucket", issuer: "https://s3-eu-west-1.amazonaws.com/my-bucket",
			want: Location{Bucket: "my-bucket", Region: "eu-west-1", Style: StylePath}},
		{name: "dualstack endpoint", target: "s3://my-bucket", issuer: "https://s3.dualstack.ap-southeast-2.amazonaws.com/my-bucket",
			want: Location{Bucket: "my-bucket", Region: "ap-southeast-2", Style: StylePath}},
		{name: "China", target: "s3://my-bucket", issuer: "https://s3.cn-north-1.amazonaws.com.cn/my-bucket",
			want: Location{Bucket: "my-bucket", Region: "cn-north-1", Style: StylePath}},
		{name: "virtual-hosted with a prefix", target: "s3://my-bucket", issuer: "https://my-bucket.s3.eu-west-1.amazonaws.com/cluster-a",
			want: Location{Bucket: "my-bucket", Prefix: "cluster-a/", Region: "eu-west-1", Style: StyleVirtualHosted}},
		{name: "virtual-hosted, matching prefix in --mirror", target: "s3://my-bucket/cluster-a/", issuer: "https://my-bucket.s3.eu-west-1.amazonaws.com/cluster-a",
			want: Location{Bucket: "my-bucket", Prefix: "cluster-a/", Region: "eu-west-1", Style: StyleVirtualHosted}},
		{name: "virtual-hosted, bucket named like the service", target: "s3://s3-x", issuer: "https://s3-x.s3.us-east-1.amazonaws.com",
			want: Location{Bucket: "s3-x", Region: "us-east-1", Style: StyleVirtualHosted}},
		{name: "custom domain: keys follow the issuer path", target: "s3://my-bucket", issuer: "https://oidc.example.com/cluster-a",
			want: Location{Bucket: "my-bucket", Prefix: "cluster-a/", Style: StyleCustom}},
		{name: "custom domain with an origin path", target: "s3://my-bucket/origin", issuer: "https://oidc.example.com/cluster-a",
			want: Location{Bucket: "my-bucket", Prefix: "origin/cluster-a/", Style: StyleCustom}},
		{name: "custom domain at the root", target: "s3://my-bucket", issuer: "https://oidc.example.com",
			want: Location{Bucket: "my-bucket", Style: StyleCustom}},
		{name: "S3-compatible endpoint, path style", target: "s3://oidc", issuer: "https://127.0.0.1:9000/oidc", endpoint: "https://127.0.0.1:9000",
			want: Location{Bucket: "oidc", Style: StylePath}},
		{name: "S3-compatible endpoint, virtual-hosted", target: "s3://oidc", issuer: "https://oidc.minio.example.com/a", endpoint: "https://minio.example.com",
			want: Location{Bucket: "oidc", Prefix: "a/", Style: StyleVirtualHosted}},
		{name: "a port makes it a custom domain", target: "s3://my-bucket", issuer: "https://s3.eu-west-1.amazonaws.com:8443/x",
			want: Location{Bucket: "my-bucket", Prefix: "x/", Style: StyleCustom}},

		{name: "dotted bucket, virtual-hosted", target: "s3://oidc.example.com", issuer: "https://oidc.example.com.s3.eu-west-1.amazonaws.com",
			wantErr: "contains dots"},
		{name: "dotted bucket, virtual-hosted on an endpoint", target: "s3://a.b", issuer: "https://a.b.minio.example.com", endpoint: "https://minio.example.com",
			wantErr: "contains dots"},
		{name: "bucket mismatch", target: "s3://other", issuer: "https://s3.eu-west-1.amazonaws.com/my-bucket",
			wantErr: `served from bucket "my-bucket"`},
		{name: "prefix mismatch", target: "s3://my-bucket/cluster-b", issuer: "https://my-bucket.s3.eu-west-1.amazonaws.com/cluster-a",
			wantErr: "does not match issuer URL"},
		{name: "path-style without a bucket", target: "s3://my-bucket", issuer: "https://s3.eu-west-1.amazonaws.com",
			wantErr: "without a bucket"},
		{name: "website endpoint", target: "s3://my-bucket", issuer: "https://my-bucket.s3-website-eu-west-1.amazonaws.com",
			wantErr: "plain HTTP"},
		{name: "invalid bucket name", target: "s3://My_Bucket", issuer: "https://oidc.example.com", wantErr: "not a valid S3 bucket name"},
		{name: "IP bucket name", target: "s3://192.168.1.1", issuer: "https://oidc.example.com", wantErr: "not a valid S3 bucket name"},
		{name: "credentials in the target", target: "s3://key:secret@my-bucket", issuer: "https://oidc.example.com", wantErr: "credential chain"},
		{name: "dot-dot segment", target: "s3://my-bucket", issuer: "https://oidc.example.com/a/%2E%2E", wantErr: "'..'"},
		{name: "not s3", target: "gs://my-bucket", issuer: "https://oidc.example.com", wantErr: "not an s3://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Resolve(u, tc.issuer, tc.endpoint)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Resolve: %+v, %v; want an error containing %q", got, err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Fatalf("error leaks the credentials in --mirror: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Resolve = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPartition(t *testing.T) {
	for region, want := range map[string]string{"eu-west-1": "aws", "cn-north-1": "aws-cn", "us-gov-west-1": "aws-us-gov", "": "aws"} {
		if got := Partition(region); got != want {
			t.Errorf("Partition(%q) = %q, want %q", region, got, want)
		}
	}
}
