package storage_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage/storagetest"
)

func TestObjectInfoMatches(t *testing.T) {
	o := storagetest.NewObject("openid/v1/jwks", []byte("{}"), documents.JWKSContentType, "public, max-age=3600")
	for _, tc := range []struct {
		name string
		info storage.ObjectInfo
		want bool
	}{
		{"same body, no headers stored", storage.ObjectInfo{SHA256: o.SHA256}, true},
		{"same body and headers", storage.ObjectInfo{SHA256: o.SHA256, Headers: true, ContentType: o.ContentType, CacheControl: o.CacheControl}, true},
		{"different body", storage.ObjectInfo{SHA256: "00"}, false},
		{"no hash recorded", storage.ObjectInfo{}, false},
		{"different cache control", storage.ObjectInfo{SHA256: o.SHA256, Headers: true, ContentType: o.ContentType, CacheControl: "max-age=60"}, false},
		{"different content type", storage.ObjectInfo{SHA256: o.SHA256, Headers: true, ContentType: "binary/octet-stream", CacheControl: o.CacheControl}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.info.Matches(o); got != tc.want {
				t.Fatalf("Matches = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestObjectsOrderAndKeys(t *testing.T) {
	set := storagetest.NewSets(t).First
	objs := storage.Objects(set)
	got := []string{objs[0].Key, objs[1].Key}
	if want := []string{"openid/v1/jwks", ".well-known/openid-configuration"}; !slices.Equal(got, want) || !slices.Equal(storage.Keys(), want) {
		t.Fatalf("Objects keys %v, Keys %v; want %v", got, storage.Keys(), want)
	}
	if objs[0].SHA256 != set.JWKS.SHA256 || objs[1].ContentType != documents.DiscoveryContentType {
		t.Fatalf("objects do not carry the documents' metadata: %+v", objs)
	}
}

// TestPublishWritesWhenStatFails: a sink that cannot describe its objects (a role allowed to write
// but not to read) still gets the documents, and the failure is reported, not hidden.
func TestPublishWritesWhenStatFails(t *testing.T) {
	mem := storagetest.NewMemory()
	denied := errors.New("AccessDenied: s3:GetObject")
	sink := &storagetest.Faulty{Sink: mem, FailStat: func(string) error { return denied }}
	set := storagetest.NewSets(t).First
	for range 2 {
		res, err := storage.Publish(context.Background(), sink, set)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Written) != 2 || len(res.StatErrors) != 2 || !errors.Is(res.StatErrors[0], denied) {
			t.Fatalf("result %+v: want both written and both stat errors reported", res)
		}
	}
}

func TestPublishRefusesNoDocuments(t *testing.T) {
	mem := storagetest.NewMemory()
	if _, err := storage.Publish(context.Background(), mem, nil); err == nil {
		t.Fatal("Publish(nil) succeeded")
	}
	if len(mem.Puts()) != 0 {
		t.Fatal("Publish(nil) wrote something")
	}
}

func TestPublishStopsOnCanceledContext(t *testing.T) {
	mem := storagetest.NewMemory()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := storage.Publish(ctx, mem, storagetest.NewSets(t).First); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a canceled context: %v, want context.Canceled", err)
	}
	if len(mem.Puts()) != 0 {
		t.Fatal("wrote with a canceled context")
	}
}
