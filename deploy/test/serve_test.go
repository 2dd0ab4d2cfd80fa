package deploytest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
)

// TestServeAsServiceAccount runs two replicas of the real binary with the arguments of the
// rendered Deployment (the chart's, and the EKS Anywhere overlay's with its signing key in another
// namespace), authenticated as the manifests' ServiceAccount (an impersonating kubeconfig), against
// the applied RBAC: the permissions are not only plausible but sufficient — the replicas elect a
// leader with the Lease, publish the signing-key Secret, and the admin API stages and promotes a
// key (update on the state Secret and on the signing-key Secret), for an operator authorized by the
// manifests' keys-admin ClusterRole and for nobody else; and the leader's signing probe mints its
// tokens and reports the key kube-apiserver really signs with.
func TestServeAsServiceAccount(t *testing.T) {
	needCluster(t)
	a := newAdmin(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "kube-oidc-issuer")
	build := exec.Command("go", "build", "-o", bin, "./cmd/kube-oidc-issuer")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	t.Run("helm", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		const ns, full = "koi-run", "koi-run-kube-oidc-issuer"
		a.ensureNamespace(t, ctx, ns, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
		objs, err := renderHelm(chartDir(), "koi-run", ns, map[string]any{
			"issuerURL":        "https://oidc.example.com/clusters/run",
			"signingKeySecret": map[string]any{"name": "workload-sa"},
			"admin":            map[string]any{"tokenAudiences": []any{adminAudience}},
		})
		if err != nil {
			t.Fatal(err)
		}
		serveAsServiceAccount(t, ctx, a, bin, objs, serveCase{
			namespace: ns, deployment: full, sa: full, signingNamespace: ns, signingKey: "workload-sa",
			lease: full, keysAdmin: full + "-keys-admin", tokenAudience: adminAudience,
		})
	})
	t.Run("kustomize eks-anywhere", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		const ns = "kube-oidc-issuer"
		a.ensureNamespace(t, ctx, "eksa-system", nil)
		objs, err := renderKustomize(kustomizeDir("overlays", "eks-anywhere"))
		if err != nil {
			t.Fatal(err)
		}
		serveAsServiceAccount(t, ctx, a, bin, objs, serveCase{
			namespace: ns, deployment: "kube-oidc-issuer", sa: "kube-oidc-issuer", signingNamespace: "eksa-system", signingKey: "prod-sa",
			lease: "kube-oidc-issuer", keysAdmin: "kube-oidc-issuer-keys-admin",
		})
	})
	// Fleet mode with the least it can be given: Roles in the watched namespaces only.
	t.Run("kustomize fleet-namespaced", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		a.ensureNamespace(t, ctx, "eksa-system", nil)
		objs, err := renderKustomize(kustomizeDir("overlays", "fleet-namespaced"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.deleteObjects(t, context.Background(), objs, "RoleBinding", "Role") })
		serveFleetAsServiceAccount(t, ctx, a, bin, objs, fleetServeCase{
			namespace: "kube-oidc-issuer", deployment: "kube-oidc-issuer", sa: "kube-oidc-issuer", lease: "kube-oidc-issuer",
			secretsNamespace: "eksa-system", prefix: "kfleet",
		})
	})
	t.Run("helm fleet, every namespace", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		const ns, full = "koi-fleet-run", "koi-fleet-run-kube-oidc-issuer"
		a.ensureNamespace(t, ctx, ns, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
		objs, err := renderHelm(chartDir(), "koi-fleet-run", ns, fleetValues())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.deleteObjects(t, context.Background(), objs, "ClusterRoleBinding", "ClusterRole") })
		serveFleetAsServiceAccount(t, ctx, a, bin, objs, fleetServeCase{
			namespace: ns, deployment: full, sa: full, lease: full,
			secretsNamespace: "koi-fleet-run-capi", prefix: "hfleet",
		})
	})
}

// adminAudience is what the Helm case sets as admin.tokenAudiences.
const adminAudience = "kube-oidc-issuer-admin"

type serveCase struct {
	namespace, deployment, sa    string
	signingNamespace, signingKey string
	lease, keysAdmin             string
	// tokenAudience, when set, is the audience the admin API requires: operators' tokens are
	// minted for it, and an API-server token must be refused.
	tokenAudience string
}

func serveAsServiceAccount(t *testing.T, ctx context.Context, a *admin, bin string, objs []*unstructured.Unstructured, c serveCase) {
	t.Helper()
	ns, full := c.namespace, c.sa
	noWarnings(t, "apply", a.apply(t, ctx, objs))
	priv, pub, err := pki.GenerateRSAKeyPEM(2048)
	if err != nil {
		t.Fatal(err)
	}
	// Cluster API <cluster>-sa layout; replaces what an earlier test may have put there.
	signing := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: c.signingKey}, Data: map[string][]byte{"tls.key": priv, "tls.crt": pub}}
	if _, err := a.cs.CoreV1().Secrets(c.signingNamespace).Create(ctx, signing, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		_, err = a.cs.CoreV1().Secrets(c.signingNamespace).Update(ctx, signing, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	} else if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	ca, err := pki.NewCA("deploy-test admin CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueServer("127.0.0.1", c.deployment+"-admin."+ns+".svc")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := leaf.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := writeImpersonatingKubeconfig(t, dir, ns, full)

	var deployArgs []string
	for _, o := range objs {
		if o.GetKind() == "Deployment" && o.GetName() == c.deployment {
			d := toTyped[struct {
				Spec struct {
					Template corev1.PodTemplateSpec `json:"template"`
				} `json:"spec"`
			}](t, o)
			deployArgs = d.Spec.Template.Spec.Containers[0].Args
		}
	}
	if len(deployArgs) == 0 {
		t.Fatal("no Deployment args")
	}

	type replica struct {
		internal, admin string
		cmd             *exec.Cmd
		logs            *lockedBuffer
		done            chan struct{}
	}
	var replicas []*replica
	for i := range 2 {
		r := &replica{
			internal: "127.0.0.1:" + strconv.Itoa(freePort(t)),
			admin:    "127.0.0.1:" + strconv.Itoa(freePort(t)),
			logs:     &lockedBuffer{},
		}
		args := []string{"serve", "--kubeconfig=" + kubeconfig, "--leader-elect-identity=replica-" + strconv.Itoa(i)}
		for _, arg := range deployArgs[1:] {
			name, _, _ := strings.Cut(arg, "=")
			switch name {
			case "--listen":
				arg = "--listen=127.0.0.1:" + strconv.Itoa(freePort(t))
			case "--internal-listen":
				arg = "--internal-listen=" + r.internal
			case "--admin-listen":
				arg = "--admin-listen=" + r.admin
			case "--admin-tls-cert-file":
				arg = name + "=" + certFile
			case "--admin-tls-key-file":
				arg = name + "=" + keyFile
			}
			args = append(args, arg)
		}
		if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--signing-probe-service-account=") }) {
			// In a pod the probe's default ServiceAccount is read from the mounted token; here,
			// outside a pod, the same one is named.
			args = append(args, "--signing-probe-service-account="+ns+"/"+full)
		}
		r.cmd = exec.Command(bin, args...)
		r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
		r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r.done = make(chan struct{})
		go func() { _ = r.cmd.Wait(); close(r.done) }()
		replicas = append(replicas, r)
	}
	t.Cleanup(func() {
		for i, r := range replicas {
			_ = r.cmd.Process.Signal(syscall.SIGTERM)
			<-r.done
			if t.Failed() {
				t.Logf("replica %d output:\n%s", i, r.logs.String())
			}
		}
	})
	if deployArgs[0] != "serve" {
		t.Fatalf("Deployment args %q do not start with serve", deployArgs)
	}

	start := time.Now()
	for i, r := range replicas {
		if err := waitOK(ctx, r.done, "http://"+r.internal+"/readyz"); err != nil {
			t.Fatalf("replica %d never ready: %v\n%s", i, err, r.logs.String())
		}
	}
	t.Logf("both replicas ready as the ServiceAccount in %s", time.Since(start).Round(time.Millisecond))
	// A Lease left by an earlier check (holder "deploy-test", 1 s) is taken over once it expires.
	var holder string
	for !strings.HasPrefix(holder, "replica-") && ctx.Err() == nil {
		l, err := a.cs.CoordinationV1().Leases(ns).Get(ctx, c.lease, metav1.GetOptions{})
		if err == nil && l.Spec.HolderIdentity != nil {
			holder = *l.Spec.HolderIdentity
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.HasPrefix(holder, "replica-") {
		t.Fatalf("Lease %s/%s holder %q", ns, c.lease, holder)
	}

	// The leader's signing probe, with the rendered RBAC, sees the key kube-apiserver signs with:
	// the kid of a token the API server mints now. (/readyz stays 200 whatever the probe says, so
	// only its detail tells.)
	wantKID, err := tokenKID(mintToken(t, ctx, a, ns, full, ""))
	if err != nil {
		t.Fatal(err)
	}
	internals := make([]string, len(replicas))
	for i, r := range replicas {
		internals[i] = r.internal
	}
	probe, err := waitSigningProbe(ctx, 30*time.Second, internals)
	if err != nil {
		t.Fatal(err)
	}
	if probe.ServiceAccount != ns+"/"+full || !slices.Equal(probe.Signing, []string{wantKID}) {
		t.Errorf("signing probe: serviceAccount %q signing %q, want %q and [%s]", probe.ServiceAccount, probe.Signing, ns+"/"+full, wantKID)
	}

	// An operator bound to the chart's keys-admin ClusterRole, and one bound to nothing.
	opToken := serviceAccountToken(t, ctx, a, ns, "operator", c.tokenAudience)
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "deploy-test-operator-" + ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: c.keysAdmin},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "operator", Namespace: ns}},
	}
	if _, err := a.cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	strangerToken := serviceAccountToken(t, ctx, a, ns, "stranger", c.tokenAudience)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	call := func(r *replica, token, method, path string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, "https://"+r.admin+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, body := call(replicas[0], strangerToken, http.MethodGet, "/admin/v1/keys"); code != http.StatusForbidden {
		t.Errorf("stranger: GET /admin/v1/keys = %d %s, want 403", code, body)
	}
	if c.tokenAudience != "" {
		// The same operator with a token for the API server: the rendered --admin-token-audience
		// refuses it.
		apiServerToken := mintToken(t, ctx, a, ns, "operator", "")
		if code, body := call(replicas[0], apiServerToken, http.MethodGet, "/admin/v1/keys"); code != http.StatusUnauthorized {
			t.Errorf("operator with an API-server token: GET /admin/v1/keys = %d %s, want 401", code, body)
		}
	}
	code, body := call(replicas[1], opToken, http.MethodPost, "/admin/v1/keys")
	if code != http.StatusCreated {
		t.Fatalf("operator: stage = %d %s, want 201", code, body)
	}
	var staged struct {
		Key struct {
			KID string `json:"kid"`
		} `json:"key"`
	}
	if err := json.Unmarshal(body, &staged); err != nil || staged.Key.KID == "" {
		t.Fatalf("stage answer %s: %v", body, err)
	}
	code, body = call(replicas[0], opToken, http.MethodPost, "/admin/v1/keys/"+staged.Key.KID+"/promote?force=true")
	if code != http.StatusOK {
		t.Fatalf("operator: promote = %d %s, want 200", code, body)
	}
	sec, err := a.cs.CoreV1().Secrets(c.signingNamespace).Get(ctx, c.signingKey, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(sec.Data["tls.key"], priv) || !bytes.Contains(sec.Data["tls.crt"], bytes.TrimSpace(pub)[30:60]) {
		t.Errorf("after promote the signing-key Secret should hold the new key and a bundle with the old one")
	}
	if code, body := call(replicas[1], opToken, http.MethodGet, "/admin/v1/keys"); code != http.StatusOK || !bytes.Contains(body, []byte(staged.Key.KID)) {
		t.Errorf("operator: list = %d %s", code, body)
	}
	for i, r := range replicas {
		if strings.Contains(r.logs.String(), "forbidden") {
			t.Errorf("replica %d logged a forbidden request:\n%s", i, r.logs.String())
		}
	}
}

// signingProbeStatus is the part of /readyz checks.signingProbe the test reads.
type signingProbeStatus struct {
	ServiceAccount string   `json:"serviceAccount"`
	Running        bool     `json:"running"`
	Signing        []string `json:"signing"`
	Result         string   `json:"result"`
	LastError      string   `json:"lastError"`
	Hint           string   `json:"hint"`
}

// waitSigningProbe polls the replicas' /readyz until the one that probes (the leader) reports a
// successful round that saw a signing key.
func waitSigningProbe(ctx context.Context, timeout time.Duration, internals []string) (signingProbeStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last []string
	for {
		last = last[:0]
		for _, addr := range internals {
			var body struct {
				Checks struct {
					SigningProbe *signingProbeStatus `json:"signingProbe"`
				} `json:"checks"`
			}
			raw, err := get(ctx, "http://"+addr+"/readyz")
			if err == nil {
				err = json.Unmarshal(raw, &body)
			}
			switch {
			case err != nil:
				last = append(last, err.Error())
			case body.Checks.SigningProbe == nil:
				last = append(last, "no checks.signingProbe in "+string(raw))
			default:
				p := *body.Checks.SigningProbe
				if p.Running && p.Result == "ok" && len(p.Signing) > 0 {
					return p, nil
				}
				last = append(last, fmt.Sprintf("%+v", p))
			}
		}
		select {
		case <-ctx.Done():
			return signingProbeStatus{}, fmt.Errorf("no replica reported a successful signing probe: %w (last: %s)", ctx.Err(), strings.Join(last, "; "))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// get returns the body of a GET whatever its status (/readyz answers 503 with details too).
func get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func writeImpersonatingKubeconfig(t *testing.T, dir, ns, sa string) string {
	t.Helper()
	rc := cluster.RESTConfig()
	cfg := clientcmdv1.Config{
		APIVersion:     "v1",
		Kind:           "Config",
		Clusters:       []clientcmdv1.NamedCluster{{Name: "test", Cluster: clientcmdv1.Cluster{Server: rc.Host, CertificateAuthorityData: cluster.CACertPEM()}}},
		AuthInfos:      []clientcmdv1.NamedAuthInfo{{Name: "sa", AuthInfo: clientcmdv1.AuthInfo{Token: rc.BearerToken, Impersonate: "system:serviceaccount:" + ns + ":" + sa, ImpersonateGroups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}}}},
		Contexts:       []clientcmdv1.NamedContext{{Name: "sa", Context: clientcmdv1.Context{Cluster: "test", AuthInfo: "sa"}}},
		CurrentContext: "sa",
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// serviceAccountToken creates the service account and mints a token for audience (the API
// server's own when empty).
func serviceAccountToken(t *testing.T, ctx context.Context, a *admin, ns, name, audience string) string {
	t.Helper()
	if _, err := a.cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return mintToken(t, ctx, a, ns, name, audience)
}

func mintToken(t *testing.T, ctx context.Context, a *admin, ns, name, audience string) string {
	t.Helper()
	var spec authenticationv1.TokenRequestSpec
	if audience != "" {
		spec.Audiences = []string{audience}
	}
	tr, err := a.cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func waitOK(ctx context.Context, exited <-chan struct{}, url string) error {
	var last string
	for {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %s)", ctx.Err(), last)
		case <-exited:
			return errors.New("the process exited")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// lockedBuffer is the output of a child process, read while the process writes it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
