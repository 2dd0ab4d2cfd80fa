package harness

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestMoto: moto_server starts on an ephemeral port, emulates S3, forgets everything on Reset, and
// leaves no process behind after Stop.
func TestMoto(t *testing.T) {
	if testing.Short() {
		t.Skip("starts moto_server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := StartMoto(ctx, MotoConfig{LogPath: t.TempDir() + "/moto.log"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	if m.Port == 0 || !strings.HasPrefix(m.URL, "http://127.0.0.1:") {
		t.Fatalf("URL %q, port %d", m.URL, m.Port)
	}

	client := s3.NewFromConfig(m.AWSConfig(), func(o *s3.Options) { o.UsePathStyle = true })
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("moto-harness-test")}); err != nil {
		t.Fatalf("CreateBucket: %v", err)
	}
	count := func() int {
		out, err := client.ListBuckets(ctx, &s3.ListBucketsInput{})
		if err != nil {
			t.Fatalf("ListBuckets: %v", err)
		}
		return len(out.Buckets)
	}
	if n := count(); n != 1 {
		t.Fatalf("%d buckets after CreateBucket, want 1", n)
	}
	if err := m.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d buckets after Reset, want 0", n)
	}

	pid := m.cmd.Process.Pid
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("moto_server's process group still exists after Stop (kill -0: %v)", err)
	}
}
