// Package storagetest is the conformance suite every storage.Sink runs (file, moto's S3, MinIO),
// plus an in-memory sink and a fault-injecting wrapper for tests of the code that drives sinks.
//
// A sink's test calls Run with a function that returns a fresh, empty sink (its own directory or
// bucket prefix) and the means to look at it the way a relying party does.
package storagetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage"
)

// Fetched is an object as a reader gets it.
type Fetched struct {
	Found bool
	Body  []byte
	// Headers says whether ContentType and CacheControl came with the body (an HTTP GET of an S3
	// object); a file read from a web root has none.
	Headers      bool
	ContentType  string
	CacheControl string
}

// Harness is one empty sink under test and the means to observe it from outside.
type Harness struct {
	Sink storage.Sink
	// Fetch reads key the way a relying party would: an anonymous HTTP GET for S3, a file read for
	// a web root. It returns Found=false for a missing object.
	Fetch func(ctx context.Context, key string) (Fetched, error)
	// Remove deletes key behind the sink's back, as an operator or a lifecycle rule might.
	Remove func(ctx context.Context, key string) error
}

// Run runs the conformance suite. newHarness is called once per subtest and must return an empty
// sink not shared with any other subtest.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Helper()
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, h Harness)
	}{
		{"StatMissing", testStatMissing},
		{"PutStatFetch", testPutStatFetch},
		{"Overwrite", testOverwrite},
		{"ConcurrentPuts", testConcurrentPuts},
		{"ReadersNeverSeePartialObjects", testNoPartialReads},
		{"CanceledContext", testCanceledContext},
		{"PublishOrderAndSkip", testPublishOrderAndSkip},
		{"PublishRepairsDrift", testPublishRepairsDrift},
		{"PublishFollowsHeaderChanges", testPublishHeaderChange},
		{"FailureBeforeDiscoveryKeepsReadersSafe", testFailureBetween},
		{"DeleteRemoves", testDeleteRemoves},
		{"DeleteMissingIsNoError", testDeleteMissing},
		{"DeleteOnlyThatKey", testDeleteOnlyThatKey},
		{"DeleteCanceledContext", testDeleteCanceledContext},
		{"DeleteConcurrentWithPuts", testDeleteConcurrentWithPuts},
		{"UnpublishOrder", testUnpublishOrder},
		{"UnpublishFailureKeepsReadersSafe", testUnpublishFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, newHarness(t))
		})
	}
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func fetch(t *testing.T, ctx context.Context, h Harness, key string) Fetched {
	t.Helper()
	f, err := h.Fetch(ctx, key)
	if err != nil {
		t.Fatalf("fetching %s: %v", h.Sink.Location(key), err)
	}
	return f
}

// NewObject returns an object with a correct SHA256.
func NewObject(key string, body []byte, contentType, cacheControl string) storage.Object {
	sum := sha256.Sum256(body)
	return storage.Object{Key: key, Body: body, ContentType: contentType, CacheControl: cacheControl, SHA256: hex.EncodeToString(sum[:])}
}

// assertStored checks o through Stat and through Fetch.
func assertStored(t *testing.T, ctx context.Context, h Harness, o storage.Object) {
	t.Helper()
	info, err := h.Sink.Stat(ctx, o.Key)
	if err != nil {
		t.Fatalf("Stat %s after Put: %v", o.Key, err)
	}
	if info.SHA256 != o.SHA256 {
		t.Fatalf("Stat %s: sha256 %q, want %q", o.Key, info.SHA256, o.SHA256)
	}
	if info.Headers && (info.ContentType != o.ContentType || info.CacheControl != o.CacheControl) {
		t.Fatalf("Stat %s: Content-Type %q, Cache-Control %q; want %q, %q", o.Key, info.ContentType, info.CacheControl, o.ContentType, o.CacheControl)
	}
	if !info.Matches(o) {
		t.Fatalf("Stat %s: %+v does not match what was put", o.Key, info)
	}
	f := fetch(t, ctx, h, o.Key)
	if !f.Found {
		t.Fatalf("%s not found by a reader after Put", h.Sink.Location(o.Key))
	}
	if !bytes.Equal(f.Body, o.Body) {
		t.Fatalf("%s: reader got %d bytes %q, want %d bytes %q", h.Sink.Location(o.Key), len(f.Body), clip(f.Body), len(o.Body), clip(o.Body))
	}
	if f.Headers && (f.ContentType != o.ContentType || f.CacheControl != o.CacheControl) {
		t.Fatalf("%s: reader got Content-Type %q, Cache-Control %q; want %q, %q", h.Sink.Location(o.Key), f.ContentType, f.CacheControl, o.ContentType, o.CacheControl)
	}
}

func clip(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}

func testStatMissing(t *testing.T, h Harness) {
	ctx := testContext(t)
	for _, key := range []string{"openid/v1/jwks", ".well-known/openid-configuration", "never/written"} {
		_, err := h.Sink.Stat(ctx, key)
		if !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Stat of missing %s: %v, want an error wrapping storage.ErrNotFound", key, err)
		}
		if f := fetch(t, ctx, h, key); f.Found {
			t.Fatalf("reader found %s before anything was put", key)
		}
	}
}

func testPutStatFetch(t *testing.T, h Harness) {
	ctx := testContext(t)
	for _, o := range []storage.Object{
		NewObject("openid/v1/jwks", []byte(`{"keys":[]}`), documents.JWKSContentType, "public, max-age=3600"),
		NewObject(".well-known/openid-configuration", []byte(`{"issuer":"https://example.com"}`), documents.DiscoveryContentType, "public, max-age=60"),
		NewObject("deeply/nested/path/to/doc.json", bytes.Repeat([]byte("x"), 256<<10), "application/json", "no-cache"),
	} {
		t.Run(o.Key, func(t *testing.T) {
			if err := h.Sink.Put(ctx, o); err != nil {
				t.Fatalf("Put %s: %v", o.Key, err)
			}
			assertStored(t, ctx, h, o)
		})
	}
}

func testOverwrite(t *testing.T, h Harness) {
	ctx := testContext(t)
	first := NewObject("openid/v1/jwks", []byte(`{"keys":["first, and longer than the second"]}`), documents.JWKSContentType, "public, max-age=3600")
	second := NewObject("openid/v1/jwks", []byte(`{"keys":["second"]}`), documents.JWKSContentType, "public, max-age=60")
	for _, o := range []storage.Object{first, second} {
		if err := h.Sink.Put(ctx, o); err != nil {
			t.Fatalf("Put: %v", err)
		}
		assertStored(t, ctx, h, o)
	}
	info, err := h.Sink.Stat(ctx, first.Key)
	if err != nil {
		t.Fatal(err)
	}
	if info.Matches(first) {
		t.Fatalf("Stat after overwrite still matches the first object")
	}
}

func testConcurrentPuts(t *testing.T, h Harness) {
	ctx := testContext(t)
	const writers = 6
	objs := make([]storage.Object, writers)
	for i := range objs {
		objs[i] = NewObject("openid/v1/jwks", bytes.Repeat([]byte{byte('a' + i)}, 32<<10+i), documents.JWKSContentType, "public, max-age=3600")
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for _, o := range objs {
		wg.Go(func() {
			if err := h.Sink.Put(ctx, o); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Put: %v", err)
	}
	f := fetch(t, ctx, h, "openid/v1/jwks")
	i := slices.IndexFunc(objs, func(o storage.Object) bool { return bytes.Equal(o.Body, f.Body) })
	if i < 0 {
		t.Fatalf("after concurrent Puts the object (%d bytes) is none of those put", len(f.Body))
	}
	assertStored(t, ctx, h, objs[i])
}

func testNoPartialReads(t *testing.T, h Harness) {
	ctx := testContext(t)
	a := NewObject("openid/v1/jwks", bytes.Repeat([]byte("A"), 192<<10), documents.JWKSContentType, "public, max-age=3600")
	b := NewObject("openid/v1/jwks", bytes.Repeat([]byte("B"), 160<<10), documents.JWKSContentType, "public, max-age=3600")
	if err := h.Sink.Put(ctx, a); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	readErr := make(chan error, 1)
	reads := 0
	go func() {
		defer close(readErr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			f, err := h.Fetch(ctx, a.Key)
			if err != nil {
				readErr <- err
				return
			}
			reads++
			if !f.Found || (!bytes.Equal(f.Body, a.Body) && !bytes.Equal(f.Body, b.Body)) {
				readErr <- fmt.Errorf("a reader saw found=%v, %d bytes starting %q: neither whole version", f.Found, len(f.Body), clip(f.Body))
				return
			}
		}
	}()
	for i := range 16 {
		o := a
		if i%2 == 0 {
			o = b
		}
		if err := h.Sink.Put(ctx, o); err != nil {
			close(stop)
			t.Fatalf("Put: %v", err)
		}
	}
	close(stop)
	if err := <-readErr; err != nil {
		t.Fatal(err)
	}
	if reads == 0 {
		t.Fatal("the reader never ran")
	}
}

func testCanceledContext(t *testing.T, h Harness) {
	ctx, cancel := context.WithCancel(testContext(t))
	cancel()
	o := NewObject("openid/v1/jwks", []byte(`{"keys":[]}`), documents.JWKSContentType, "public, max-age=3600")
	if err := h.Sink.Put(ctx, o); err == nil {
		t.Fatal("Put with a canceled context succeeded")
	}
	if _, err := h.Sink.Stat(testContext(t), o.Key); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after a canceled Put, Stat: %v, want not found", err)
	}
}

// recorder records the keys put and deleted through it, in order.
type recorder struct {
	storage.Sink
	mu      sync.Mutex
	puts    []string
	deletes []string
}

func (r *recorder) Delete(ctx context.Context, key string) error {
	r.mu.Lock()
	r.deletes = append(r.deletes, key)
	r.mu.Unlock()
	return r.Sink.Delete(ctx, key)
}

func (r *recorder) takeDeletes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.deletes
	r.deletes = nil
	return d
}

func (r *recorder) Put(ctx context.Context, o storage.Object) error {
	r.mu.Lock()
	r.puts = append(r.puts, o.Key)
	r.mu.Unlock()
	return r.Sink.Put(ctx, o)
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.puts
	r.puts = nil
	return p
}

func testPublishOrderAndSkip(t *testing.T, h Harness) {
	ctx := testContext(t)
	sets := NewSets(t)
	rec := &recorder{Sink: h.Sink}
	for i, set := range []*documents.Set{sets.First, sets.Second} {
		res, err := storage.Publish(ctx, rec, set)
		if err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
		if want := storage.Keys(); !slices.Equal(rec.take(), want) || !slices.Equal(res.Written, want) {
			t.Fatalf("Publish %d wrote %v, want JWKS then discovery %v", i, res.Written, want)
		}
		AssertPublished(t, ctx, h, set)

		res, err = storage.Publish(ctx, rec, set)
		if err != nil {
			t.Fatalf("Publish %d again: %v", i, err)
		}
		if puts := rec.take(); len(puts) != 0 || len(res.Written) != 0 || len(res.Unchanged) != 2 {
			t.Fatalf("Publish of unchanged documents wrote %v (result %+v), want nothing", puts, res)
		}
	}
}

func testPublishRepairsDrift(t *testing.T, h Harness) {
	ctx := testContext(t)
	set := NewSets(t).First
	rec := &recorder{Sink: h.Sink}
	if _, err := storage.Publish(ctx, rec, set); err != nil {
		t.Fatal(err)
	}
	rec.take()
	discovery := storage.Key(documents.DiscoveryPath)
	if err := h.Remove(ctx, discovery); err != nil {
		t.Fatalf("removing %s: %v", discovery, err)
	}
	if f := fetch(t, ctx, h, discovery); f.Found {
		t.Fatal("Remove did not remove")
	}
	res, err := storage.Publish(ctx, rec, set)
	if err != nil {
		t.Fatal(err)
	}
	if puts := rec.take(); !slices.Equal(puts, []string{discovery}) {
		t.Fatalf("after the discovery document was deleted, Publish wrote %v (result %+v), want only %s", puts, res, discovery)
	}
	AssertPublished(t, ctx, h, set)
}

func testPublishHeaderChange(t *testing.T, h Harness) {
	ctx := testContext(t)
	sets := NewSets(t)
	if _, err := storage.Publish(ctx, h.Sink, sets.First); err != nil {
		t.Fatal(err)
	}
	shortCache := sets.Render(t, sets.First.Keys, 60*time.Second)
	res, err := storage.Publish(ctx, h.Sink, shortCache)
	if err != nil {
		t.Fatal(err)
	}
	info, err := h.Sink.Stat(ctx, storage.Key(documents.JWKSPath))
	if err != nil {
		t.Fatal(err)
	}
	if info.Headers {
		if len(res.Written) != 2 {
			t.Fatalf("a changed Cache-Control rewrote %v, want both documents", res.Written)
		}
	} else if len(res.Written) != 0 {
		t.Fatalf("a sink that does not store headers rewrote %v for a Cache-Control change", res.Written)
	}
	AssertPublished(t, ctx, h, shortCache)
}

// testFailureBetween: whichever write fails, a reader that follows the discovery document it
// finds gets a JWKS with every key the discovery document's generation signs with, and the next
// good Publish converges.
func testFailureBetween(t *testing.T, h Harness) {
	ctx := testContext(t)
	sets := NewSets(t)
	jwksKey, discoveryKey := storage.Key(documents.JWKSPath), storage.Key(documents.DiscoveryPath)
	failOn := func(key string) *Faulty {
		return &Faulty{Sink: h.Sink, FailPut: func(o storage.Object) error {
			if o.Key == key {
				return errors.New("injected failure writing " + key)
			}
			return nil
		}}
	}

	// First publication ever, JWKS write fails: no discovery document may appear.
	if _, err := storage.Publish(ctx, failOn(jwksKey), sets.First); err == nil {
		t.Fatal("Publish succeeded although the JWKS write failed")
	}
	if f := fetch(t, ctx, h, discoveryKey); f.Found {
		t.Fatal("a discovery document was published although its JWKS could not be")
	}

	if _, err := storage.Publish(ctx, h.Sink, sets.First); err != nil {
		t.Fatal(err)
	}
	// Rotation, JWKS write fails: both documents stay those of the first set.
	if _, err := storage.Publish(ctx, failOn(jwksKey), sets.Second); err == nil {
		t.Fatal("Publish succeeded although the JWKS write failed")
	}
	AssertPublished(t, ctx, h, sets.First)
	AssertReadersSafe(t, ctx, h, sets.First)

	// Rotation, discovery write fails after the JWKS: the new JWKS (with the new active key) sits
	// next to the old discovery document, which is safe.
	if _, err := storage.Publish(ctx, failOn(discoveryKey), sets.Second); err == nil {
		t.Fatal("Publish succeeded although the discovery write failed")
	}
	if f := fetch(t, ctx, h, jwksKey); !bytes.Equal(f.Body, sets.Second.JWKS.Body) {
		t.Fatalf("after the discovery write failed the JWKS is %q, want the new one", clip(f.Body))
	}
	if f := fetch(t, ctx, h, discoveryKey); !bytes.Equal(f.Body, sets.First.Discovery.Body) {
		t.Fatalf("the failed discovery write changed the discovery document to %q", clip(f.Body))
	}
	AssertReadersSafe(t, ctx, h, sets.Second)

	res, err := storage.Publish(ctx, h.Sink, sets.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Written, []string{discoveryKey}) {
		t.Fatalf("recovery Publish wrote %v, want only the discovery document", res.Written)
	}
	AssertPublished(t, ctx, h, sets.Second)
}

// assertGone checks that key holds no object, through Stat and through Fetch.
func assertGone(t *testing.T, ctx context.Context, h Harness, key string) {
	t.Helper()
	if _, err := h.Sink.Stat(ctx, key); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Stat %s after Delete: %v, want an error wrapping storage.ErrNotFound", key, err)
	}
	if f := fetch(t, ctx, h, key); f.Found {
		t.Fatalf("a reader still finds %s (%d bytes %q) after Delete", h.Sink.Location(key), len(f.Body), clip(f.Body))
	}
}

func testDeleteRemoves(t *testing.T, h Harness) {
	ctx := testContext(t)
	for _, o := range []storage.Object{
		NewObject("openid/v1/jwks", []byte(`{"keys":[]}`), documents.JWKSContentType, "public, max-age=3600"),
		NewObject(".well-known/openid-configuration", []byte(`{"issuer":"https://example.com"}`), documents.DiscoveryContentType, "public, max-age=60"),
		NewObject("deeply/nested/path/to/doc.json", []byte(`{}`), "application/json", "no-cache"),
	} {
		t.Run(o.Key, func(t *testing.T) {
			if err := h.Sink.Put(ctx, o); err != nil {
				t.Fatalf("Put %s: %v", o.Key, err)
			}
			assertStored(t, ctx, h, o)
			if err := h.Sink.Delete(ctx, o.Key); err != nil {
				t.Fatalf("Delete %s: %v", o.Key, err)
			}
			assertGone(t, ctx, h, o.Key)
			// Whatever a sink tidied up along with the object, the key can be written again.
			if err := h.Sink.Put(ctx, o); err != nil {
				t.Fatalf("Put %s after Delete: %v", o.Key, err)
			}
			assertStored(t, ctx, h, o)
		})
	}
}

func testDeleteMissing(t *testing.T, h Harness) {
	ctx := testContext(t)
	for _, key := range []string{"openid/v1/jwks", ".well-known/openid-configuration", "never/written/at/all"} {
		if err := h.Sink.Delete(ctx, key); err != nil {
			t.Fatalf("Delete of %s, which was never written: %v, want nil", key, err)
		}
		assertGone(t, ctx, h, key)
	}
	o := NewObject("openid/v1/jwks", []byte(`{"keys":[]}`), documents.JWKSContentType, "public, max-age=3600")
	if err := h.Sink.Put(ctx, o); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := h.Sink.Delete(ctx, o.Key); err != nil {
			t.Fatalf("Delete #%d of %s: %v, want nil", i+1, o.Key, err)
		}
		assertGone(t, ctx, h, o.Key)
	}
}

func testDeleteOnlyThatKey(t *testing.T, h Harness) {
	ctx := testContext(t)
	target := NewObject("openid/v1/jwks", []byte(`{"keys":["target"]}`), documents.JWKSContentType, "public, max-age=3600")
	others := []storage.Object{
		NewObject(".well-known/openid-configuration", []byte(`{"issuer":"https://example.com"}`), documents.DiscoveryContentType, "public, max-age=60"),
		NewObject("openid/v1/jwks.bak", []byte(`{"keys":["same name with a suffix"]}`), "application/json", "no-cache"),
		NewObject("openid/v1/jwks2", []byte(`{"keys":["same prefix"]}`), "application/json", "no-cache"),
		NewObject("openid/v1/other", []byte("same directory"), "text/plain", "no-cache"),
		NewObject("openid/v2/jwks", []byte(`{"keys":["sibling directory"]}`), documents.JWKSContentType, "public, max-age=3600"),
		NewObject("jwks", []byte(`{"keys":["same base name at the top"]}`), documents.JWKSContentType, "public, max-age=3600"),
	}
	for _, o := range append([]storage.Object{target}, others...) {
		if err := h.Sink.Put(ctx, o); err != nil {
			t.Fatalf("Put %s: %v", o.Key, err)
		}
	}
	if err := h.Sink.Delete(ctx, target.Key); err != nil {
		t.Fatalf("Delete %s: %v", target.Key, err)
	}
	assertGone(t, ctx, h, target.Key)
	for _, o := range others {
		assertStored(t, ctx, h, o)
	}
	// Emptying most of a directory leaves the rest of it alone.
	for _, key := range []string{"openid/v1/other", "openid/v1/jwks2"} {
		if err := h.Sink.Delete(ctx, key); err != nil {
			t.Fatalf("Delete %s: %v", key, err)
		}
		assertGone(t, ctx, h, key)
	}
	assertStored(t, ctx, h, others[1])
	assertStored(t, ctx, h, others[4])
}

func testDeleteCanceledContext(t *testing.T, h Harness) {
	ctx := testContext(t)
	o := NewObject("openid/v1/jwks", []byte(`{"keys":[]}`), documents.JWKSContentType, "public, max-age=3600")
	if err := h.Sink.Put(ctx, o); err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := h.Sink.Delete(canceled, o.Key); err == nil {
		t.Fatal("Delete with a canceled context succeeded")
	}
	assertStored(t, ctx, h, o)
}

// testDeleteConcurrentWithPuts: deleting one object while another next to it is written (a
// web root removes emptied directories) never makes the write fail or lose the object.
func testDeleteConcurrentWithPuts(t *testing.T, h Harness) {
	ctx := testContext(t)
	const rounds = 12
	objs := []storage.Object{
		NewObject("shared/dir/a", []byte("object a"), "text/plain", "no-cache"),
		NewObject("shared/dir/b", []byte("object b"), "text/plain", "no-cache"),
		NewObject("shared/c", []byte("object c"), "text/plain", "no-cache"),
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(objs))
	for _, o := range objs {
		wg.Go(func() {
			for range rounds {
				if err := h.Sink.Put(ctx, o); err != nil {
					errs <- fmt.Errorf("Put %s: %w", o.Key, err)
					return
				}
				if err := h.Sink.Delete(ctx, o.Key); err != nil {
					errs <- fmt.Errorf("Delete %s: %w", o.Key, err)
					return
				}
			}
			if err := h.Sink.Put(ctx, o); err != nil {
				errs <- fmt.Errorf("last Put %s: %w", o.Key, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Put and Delete: %v", err)
	}
	for _, o := range objs {
		assertStored(t, ctx, h, o)
	}
}

func testUnpublishOrder(t *testing.T, h Harness) {
	ctx := testContext(t)
	set := NewSets(t).First
	jwksKey, discoveryKey := storage.Key(documents.JWKSPath), storage.Key(documents.DiscoveryPath)
	if want := []string{discoveryKey, jwksKey}; !slices.Equal(storage.UnpublishKeys(), want) {
		t.Fatalf("UnpublishKeys = %v, want discovery then JWKS %v", storage.UnpublishKeys(), want)
	}
	if _, err := storage.Publish(ctx, h.Sink, set); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{Sink: h.Sink}
	for i := range 2 { // the second time nothing is left: still no error
		res, err := storage.Unpublish(ctx, rec)
		if err != nil {
			t.Fatalf("Unpublish #%d: %v", i+1, err)
		}
		want := []string{discoveryKey, jwksKey}
		if deletes := rec.takeDeletes(); !slices.Equal(deletes, want) || !slices.Equal(res.Removed, want) {
			t.Fatalf("Unpublish #%d deleted %v (result %+v), want discovery then JWKS %v", i+1, deletes, res, want)
		}
		if puts := rec.take(); len(puts) != 0 {
			t.Fatalf("Unpublish wrote %v", puts)
		}
		assertGone(t, ctx, h, discoveryKey)
		assertGone(t, ctx, h, jwksKey)
	}
	// A cluster that comes back is published afresh.
	if res, err := storage.Publish(ctx, h.Sink, set); err != nil || len(res.Written) != 2 {
		t.Fatalf("Publish after Unpublish wrote %v: %v", res.Written, err)
	}
	AssertPublished(t, ctx, h, set)
}

// testUnpublishFailure: whichever removal fails, a reader never finds a discovery document
// without its JWKS, and the next Unpublish finishes the job.
func testUnpublishFailure(t *testing.T, h Harness) {
	ctx := testContext(t)
	set := NewSets(t).First
	jwksKey, discoveryKey := storage.Key(documents.JWKSPath), storage.Key(documents.DiscoveryPath)
	if _, err := storage.Publish(ctx, h.Sink, set); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{Sink: h.Sink}
	failOn := func(key string) (*Faulty, error) {
		injected := errors.New("injected failure deleting " + key)
		return &Faulty{Sink: rec, FailDelete: func(k string) error {
			if k == key {
				return injected
			}
			return nil
		}}, injected
	}

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if res, err := storage.Unpublish(canceled, rec); err == nil || len(res.Removed) != 0 {
		t.Fatalf("Unpublish with a canceled context: removed %v, error %v; want nothing removed and an error", res.Removed, err)
	}
	rec.takeDeletes()
	AssertPublished(t, ctx, h, set)

	// The discovery document cannot be removed: the JWKS must stay too.
	sink, injected := failOn(discoveryKey)
	res, err := storage.Unpublish(ctx, sink)
	if !errors.Is(err, injected) {
		t.Fatalf("Unpublish with the discovery removal failing: %v, want the injected error", err)
	}
	if deletes := rec.takeDeletes(); len(deletes) != 0 || len(res.Removed) != 0 {
		t.Fatalf("after the discovery removal failed Unpublish went on to delete %v (result %+v)", deletes, res)
	}
	AssertPublished(t, ctx, h, set)
	AssertReadersSafe(t, ctx, h, set)

	// The JWKS cannot be removed after the discovery document was: only an unreferenced JWKS
	// remains.
	sink, injected = failOn(jwksKey)
	res, err = storage.Unpublish(ctx, sink)
	if !errors.Is(err, injected) {
		t.Fatalf("Unpublish with the JWKS removal failing: %v, want the injected error", err)
	}
	if !slices.Equal(res.Removed, []string{discoveryKey}) {
		t.Fatalf("Unpublish removed %v, want only the discovery document", res.Removed)
	}
	assertGone(t, ctx, h, discoveryKey)
	if f := fetch(t, ctx, h, jwksKey); !f.Found || !bytes.Equal(f.Body, set.JWKS.Body) {
		t.Fatalf("the JWKS whose removal failed is found=%v %q, want it unchanged", f.Found, clip(f.Body))
	}

	// The next Unpublish finishes.
	rec.takeDeletes()
	if res, err := storage.Unpublish(ctx, rec); err != nil || len(res.Removed) != 2 {
		t.Fatalf("Unpublish after the failures removed %v: %v", res.Removed, err)
	}
	assertGone(t, ctx, h, discoveryKey)
	assertGone(t, ctx, h, jwksKey)
}

// AssertPublished checks that a reader gets exactly set's two documents.
func AssertPublished(t *testing.T, ctx context.Context, h Harness, set *documents.Set) {
	t.Helper()
	for _, o := range storage.Objects(set) {
		f := fetch(t, ctx, h, o.Key)
		if !f.Found || !bytes.Equal(f.Body, o.Body) {
			t.Fatalf("%s: reader got found=%v %q, want %q", h.Sink.Location(o.Key), f.Found, clip(f.Body), clip(o.Body))
		}
		if f.Headers && (f.ContentType != o.ContentType || f.CacheControl != o.CacheControl) {
			t.Fatalf("%s: Content-Type %q, Cache-Control %q; want %q, %q", h.Sink.Location(o.Key), f.ContentType, f.CacheControl, o.ContentType, o.CacheControl)
		}
	}
}

// AssertReadersSafe checks the invariant relying parties depend on: the discovery document a reader
// finds points at a JWKS that exists and holds every active key of signer (the set whose keys sign
// tokens now). The discovery document itself may be older than the JWKS.
func AssertReadersSafe(t *testing.T, ctx context.Context, h Harness, signer *documents.Set) {
	t.Helper()
	f := fetch(t, ctx, h, storage.Key(documents.DiscoveryPath))
	if !f.Found {
		t.Fatal("no discovery document")
	}
	var disco struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(f.Body, &disco); err != nil || !strings.HasSuffix(disco.JWKSURI, documents.JWKSPath) {
		t.Fatalf("discovery document %q has no usable jwks_uri (%v)", clip(f.Body), err)
	}
	j := fetch(t, ctx, h, storage.Key(documents.JWKSPath))
	if !j.Found {
		t.Fatal("the discovery document points at a JWKS that does not exist")
	}
	var jwks struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(j.Body, &jwks); err != nil {
		t.Fatalf("JWKS does not parse: %v", err)
	}
	have := map[string]bool{}
	for _, k := range jwks.Keys {
		have[k.Kid] = true
	}
	for _, k := range signer.Keys.Keys() {
		if k.Phase == keys.PhaseActive && !have[k.Public.KeyID()] {
			t.Fatalf("the JWKS readers find lacks the active key %s (has %v)", k.Public.KeyID(), jwks.Keys)
		}
	}
}

// Sets are two consecutive renderings for one issuer: First has one active ECDSA P-256 key;
// Second rotates to a new active P-384 key and keeps the first one published, so both the JWKS
// and the discovery document (its algorithm list) change.
type Sets struct {
	Issuer        string
	First, Second *documents.Set
	generation    uint64
}

// NewSets generates fresh keys and renders both sets.
func NewSets(t testing.TB) *Sets {
	t.Helper()
	first := newKey(t, elliptic.P256())
	second := newKey(t, elliptic.P384())
	s := &Sets{Issuer: "https://oidc.example.com/cluster-a"}
	s.First = s.Render(t, keys.NewSet(keys.Key{Public: first, Phase: keys.PhaseActive}), documents.DefaultMaxAge)
	s.Second = s.Render(t, keys.NewSet(
		keys.Key{Public: second, Phase: keys.PhaseActive},
		keys.Key{Public: first, Phase: keys.PhasePublished},
	), documents.DefaultMaxAge)
	return s
}

// Render renders ks for the Sets' issuer as the next generation.
func (s *Sets) Render(t testing.TB, ks keys.Set, maxAge time.Duration) *documents.Set {
	t.Helper()
	s.generation++
	set, err := documents.Render(documents.Config{IssuerURL: s.Issuer, MaxAge: maxAge}, ks, s.generation, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func newKey(t testing.TB, curve elliptic.Curve) keys.PublicKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := keys.NewPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
