package deploytest

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
)

const nonroot = 65532 // distroless/static:nonroot, USER in the Dockerfile, runAsUser in the manifests

// dockerfileBuild returns the Dockerfile's build RUN instruction (`make build`) (continuations joined) and
// checks the final stage: distroless/static nonroot, USER 65532, no RUN (there is no shell).
func dockerfileBuild(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var instrs []string
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		instrs = append(instrs, cur.String())
		cur.Reset()
	}
	var build string
	final := -1
	for i, in := range instrs {
		if strings.HasPrefix(in, "FROM ") {
			final = i
		}
		if strings.HasPrefix(in, "RUN ") && (strings.Contains(in, "go build") || strings.Contains(in, "make build")) {
			build = strings.TrimPrefix(in, "RUN ")
		}
	}
	if build == "" || final < 0 {
		t.Fatalf("Dockerfile: no go build RUN or no FROM")
	}
	if from := instrs[final]; !strings.Contains(from, "distroless/static") || !strings.HasSuffix(from, ":nonroot") {
		t.Errorf("final stage %q: want distroless/static …:nonroot", from)
	}
	var user bool
	for _, in := range instrs[final:] {
		if strings.HasPrefix(in, "RUN ") {
			t.Errorf("final stage runs %q: the base has no shell", in)
		}
		if in == fmt.Sprintf("USER %d:%d", nonroot, nonroot) {
			user = true
		}
	}
	if !user {
		t.Errorf("final stage: want USER %d:%d", nonroot, nonroot)
	}
	// The Makefile's build target is the one source of the build flags: the Dockerfile calls it.
	if !strings.HasPrefix(build, "make build ") || !strings.Contains(build, "BIN=/out/kube-oidc-issuer") {
		t.Fatalf("Dockerfile build %q: want make build BIN=/out/kube-oidc-issuer (the Makefile holds the flags)", build)
	}
	return build
}

// TestImageBinary builds the binary with the Dockerfile's own build command (only the output
// directory changes) from the build context .dockerignore leaves, then checks what the image relies on: no dynamic loader or libraries (the
// base has no libc), the stamped version, and serving as the image's non-root user.
func TestImageBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	build := dockerfileBuild(t)
	dir, err := os.MkdirTemp("", "koi-image-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // the non-root user must reach the binary
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	const version, commit = "v9.8.7-deploytest", "0123456789abcdef"
	start := time.Now()
	cmd := exec.Command("sh", "-c", strings.ReplaceAll(build, "/out/", out+"/"))
	cmd.Dir = buildContext(t, filepath.Join(dir, "src"))
	cmd.Env = append(os.Environ(), "VERSION="+version, "COMMIT="+commit)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, b)
	}
	t.Logf("built as the Dockerfile does in %s", time.Since(start).Round(time.Millisecond))
	bin := filepath.Join(out, "kube-oidc-issuer")

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("program header %s: the binary is dynamically linked", p.Type)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("DT_NEEDED %v (%v): want none", libs, err)
	}
	if f.Section(".symtab") != nil {
		t.Errorf("symbol table present: want -s -w (stripped)")
	}
	f.Close()
	assertBuildTags(t, bin)

	v, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(v), version) || !strings.Contains(string(v), commit) {
		t.Errorf("version = %q (%v): want %s and %s", v, err, version, commit)
	}

	// Serve a key file as uid/gid 65532 (the image's user) and fetch the JWKS.
	_, pub, err := pki.GenerateRSAKeyPEM(2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "sa.pub")
	if err := os.WriteFile(keyFile, pub, 0o644); err != nil { // like kubeadm's sa.pub
		t.Fatal(err)
	}
	want, err := exec.Command(bin, "jwks", "--public-key", keyFile).Output()
	if err != nil {
		t.Fatal(err)
	}
	pub1, internal := freePort(t), freePort(t)
	srv := exec.Command(bin, "serve", "--issuer-url=https://oidc.example.com/clusters/image",
		"--key-file="+keyFile, "--listen=127.0.0.1:"+strconv.Itoa(pub1), "--internal-listen=127.0.0.1:"+strconv.Itoa(internal))
	srv.Env = []string{} // like the image: no HOME, no KUBECONFIG
	var logs bytes.Buffer
	srv.Stdout, srv.Stderr = &logs, &logs
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if os.Getuid() == 0 {
		srv.SysProcAttr.Credential = &syscall.Credential{Uid: nonroot, Gid: nonroot}
	} else {
		t.Logf("not root: serving as uid %d instead of %d", os.Getuid(), nonroot)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		_ = srv.Wait()
		if t.Failed() {
			t.Logf("serve output:\n%s", logs.String())
		}
	})
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", srv.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "Uid:") {
			if fields := strings.Fields(line); len(fields) < 2 || fields[1] == "0" {
				t.Errorf("serve runs as root: %s", line)
			} else {
				t.Logf("serve: %s", line)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://127.0.0.1:%d/clusters/image/openid/v1/jwks", pub1)
	var got []byte
	for {
		resp, err := http.Get(url)
		if err == nil {
			got, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("JWKS never served: %v %s\n%s", err, got, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(want)) {
		t.Errorf("served JWKS\n%s\nwant (kube-oidc-issuer jwks)\n%s", got, want)
	}
}

// buildContext copies the repository as `docker build` sends it (what .dockerignore leaves) to dst,
// so the build proves .dockerignore keeps everything the binary needs.
func buildContext(t *testing.T, dst string) string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	var files int
	err = filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(repoRoot, path)
		if err != nil || rel == "." {
			return err
		}
		skip, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		switch {
		case skip && d.IsDir() && !pm.Exclusions():
			return filepath.SkipDir
		case skip:
			return nil
		case d.IsDir():
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		case !d.Type().IsRegular():
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("build context: %d files", files)
	return dst
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// wantBuildTags are the tags every release build needs (GO_TAGS in the Makefile): grpcnotrace keeps
// gRPC's golang.org/x/net/trace, and with it html/template, out of the binary (58 MB instead of
// 37 MB, ~14 MiB more resident memory).
const wantBuildTags = "grpcnotrace"

// assertBuildTags checks the build settings recorded in bin.
func assertBuildTags(t *testing.T, bin string) {
	t.Helper()
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range info.Settings {
		if s.Key == "-tags" && slices.Contains(strings.Split(s.Value, ","), wantBuildTags) {
			return
		}
	}
	t.Errorf("%s was built without -tags %s", bin, wantBuildTags)
}

// TestMakeBuildTags: `make build` builds with the release tags too.
func TestMakeBuildTags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "kube-oidc-issuer")
	cmd := exec.Command("make", "--no-print-directory", "build", "BIN="+bin)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	assertBuildTags(t, bin)
}
