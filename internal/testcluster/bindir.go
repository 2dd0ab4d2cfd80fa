package testcluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	modulePath = "github.com/kube-oidc-issuer/kube-oidc-issuer"
	// RepoRootEnv overrides the search for the repository root done by BinDir.
	RepoRootEnv  = "KOI_REPO_ROOT"
	buildScript  = "hack/build-test-binaries.sh"
	apiserverBin = "kube-apiserver"
	etcdBin      = "etcd"
)

// BinDir runs hack/build-test-binaries.sh, which builds kube-apiserver and etcd into a cache
// directory the first time (several minutes) and only checks its stamps afterwards (well under a
// second), and returns that directory. The script's progress (its stderr) is streamed to progress,
// which may be nil.
//
// The repository is found through $KOI_REPO_ROOT or by walking up from the working directory to
// the go.mod of this module. Concurrent callers, also in other processes (go test runs packages in
// parallel), are serialized with a lock on the script so that only one of them builds.
func BinDir(ctx context.Context, progress io.Writer) (string, error) {
	return BuildBinaries(ctx, progress, apiserverBin, etcdBin)
}

// BuildBinaries is BinDir for the named components of hack/build-test-binaries.sh (each a
// directory under hack/tools, e.g. "minio"), under the same lock. It returns the bin directory,
// which holds every named binary.
func BuildBinaries(ctx context.Context, progress io.Writer, names ...string) (string, error) {
	if len(names) == 0 {
		return "", errors.New("no test binary named")
	}
	if progress == nil {
		progress = io.Discard
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, buildScript)
	unlock, err := lockFile(ctx, script)
	if err != nil {
		return "", err
	}
	defer unlock()

	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, names...)...)
	cmd.Dir = root
	cmd.Stdout = &stdout
	cmd.Stderr = progress
	cmd.Env = childEnv()
	// The script starts `go build`: cancel the whole group, not only bash.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("running %s (progress above): %w", script, err)
	}

	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	dir := strings.TrimSpace(lines[len(lines)-1])
	if dir == "" {
		return "", fmt.Errorf("%s printed no bin directory", script)
	}
	for _, name := range names {
		if err := checkExecutable(filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("bin directory printed by %s: %w", script, err)
		}
	}
	return dir, nil
}

// RepoRoot returns $KOI_REPO_ROOT, or the nearest directory at or above the working directory
// whose go.mod declares this module.
func RepoRoot() (string, error) {
	if dir := os.Getenv(RepoRootEnv); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, buildScript)); err != nil {
			return "", fmt.Errorf("$%s=%s is not the repository root: %w", RepoRootEnv, dir, err)
		}
		return dir, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository root: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if mod, err := moduleOf(filepath.Join(dir, "go.mod")); err == nil && mod == modulePath {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.mod for module %s at or above %s; set $%s", modulePath, wd, RepoRootEnv)
		}
	}
}

// moduleOf returns the module path declared in a go.mod file.
func moduleOf(goMod string) (string, error) {
	f, err := os.Open(goMod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "module"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			rest, _, _ = strings.Cut(rest, "//")
			rest = strings.TrimSpace(rest)
			if unq, err := strconv.Unquote(rest); err == nil {
				rest = unq
			}
			return rest, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s has no module directive", goMod)
}

// lockFile takes an exclusive flock on path, polling so that ctx can cancel the wait.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening %s to lock it: %w", path, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("waiting for another build of the test binaries: %w", context.Cause(ctx))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}
