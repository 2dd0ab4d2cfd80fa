package harness

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestMotoRestart: a moto_server started on a given port comes back on that port after Restart
// (with the IAM extension, as the soak test runs it), and has forgotten everything.
func TestMotoRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts moto_server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	m, err := StartMoto(ctx, MotoConfig{LogPath: t.TempDir() + "/moto.log", Port: port, IAMClientIDs: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Stop() }()
	if m.Port != port {
		t.Fatalf("moto_server listens on %d, asked for %d", m.Port, port)
	}
	client := s3.NewFromConfig(m.AWSConfig(), func(o *s3.Options) { o.UsePathStyle = true })
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("moto-restart-test")}); err != nil {
		t.Fatalf("CreateBucket: %v", err)
	}

	old := m
	m, err = old.Restart(ctx)
	if err != nil {
		m = old
		t.Fatal(err)
	}
	if m.Port != port || m.URL != old.URL {
		t.Fatalf("after Restart moto_server is at %s, want %s", m.URL, old.URL)
	}
	out, err := client.ListBuckets(ctx, &s3.ListBucketsInput{})
	if err != nil {
		t.Fatalf("ListBuckets after Restart (same client, same URL): %v", err)
	}
	if len(out.Buckets) != 0 {
		t.Fatalf("%d buckets after Restart, want none: moto keeps no state", len(out.Buckets))
	}
}
