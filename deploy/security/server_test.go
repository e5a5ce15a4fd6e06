package security_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
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

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/testenv"
)

// freePort returns a loopback address nothing listens on.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// get returns the status code and body of a GET.
func get(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// listeningPorts returns the TCP ports process pid listens on: its socket descriptors matched with the LISTEN
// sockets of /proc/net/tcp and tcp6.
func listeningPorts(t *testing.T, pid int) []int {
	t.Helper()
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	var ports []int
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] { // 0A: LISTEN
				continue
			}
			_, hexPort, _ := strings.Cut(fields[1], ":")
			port, err := strconv.ParseInt(hexPort, 16, 32)
			if err != nil {
				t.Fatalf("%s: %q: %v", table, fields[1], err)
			}
			ports = append(ports, int(port))
		}
		_ = f.Close()
	}
	slices.Sort(ports)
	return ports
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestIPAMServerWithItsOwnAccount runs the braid-ipam-server binary as deploy/base runs it, with a real token
// of its ServiceAccount and nothing more: it elects itself in braid-system, serves a pod through RBAC and the
// admission policy; it listens on exactly its metrics and probe ports, which answer /metrics and
// /healthz, /readyz and nothing else (no pprof, no expvar); and its debug log holds no token.
func TestIPAMServerWithItsOwnAccount(t *testing.T) {
	bin := binaries(t)
	ctx := t.Context()
	dir := t.TempDir()
	tok := token(t, serverSA, nil)
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	kc.AuthInfos[serverSA] = &clientcmdapi.AuthInfo{Token: tok}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: serverSA}
	kc.CurrentContext = "envtest"
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}

	metrics, probes := freePort(t), freePort(t)
	cmd := exec.Command(filepath.Join(bin, "braid-ipam-server"), "--kubeconfig", kubeconfig,
		"--leader-elect=true", "--leader-election-namespace", braidNS,
		"--metrics-bind-address", metrics, "--health-probe-bind-address", probes, "--zap-log-level=debug")
	log := &testenv.OutputBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := false
	stop := func() {
		if !exited {
			exited = true
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}
	}
	defer stop()
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		code, _, err := get(ctx, "http://"+probes+"/readyz")
		return err == nil && code == http.StatusOK, nil
	}); err != nil {
		t.Fatalf("braid-ipam-server never became ready with its own account:\n%s", log.String())
	}

	// It serves a pod: FloatingIP created, braid.dev/ip-assignments patched on the pod (through the policy).
	mkNodes(t, "node-a")
	ns := env.Namespace(t)
	cleanPool(t, "sec-server")
	if err := env.Client.Create(ctx, pool("sec-server")); err != nil {
		t.Fatal(err)
	}
	nad := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]any{"namespace": ns, "name": "mgmt"},
		"spec": map[string]any{"config": `{"cniVersion":"1.0.0","name":"mgmt","type":"macvlan","master":"mgmt0",` +
			`"ipam":{"type":"braid-ipam","pools":["sec-server"]}}`},
	}}
	if err := env.Client.Create(ctx, nad); err != nil {
		t.Fatal(err)
	}
	pod := newPod(ns, "db-0", "node-a")
	pod.Annotations["k8s.v1.cni.cncf.io/networks"] = "mgmt"
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got := &corev1.Pod{}
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), got)
		return err == nil && strings.Contains(got.Annotations[ipAssignments], "198.51.100."), nil
	}); err != nil {
		t.Errorf("braid-ipam-server did not record an address on the pod:\n%s", log.String())
	}

	// Its listeners: the two ports, and only their paths.
	if got, want := listeningPorts(t, cmd.Process.Pid), []int{portOf(t, metrics), portOf(t, probes)}; !slices.Equal(got, sortedCopy(want)) {
		t.Errorf("braid-ipam-server listens on ports %v, want only metrics and probes %v", got, want)
	}
	served := map[string]bool{"http://" + metrics + "/metrics": true, "http://" + probes + "/healthz": true,
		"http://" + probes + "/readyz": true, "http://" + probes + "/readyz/rebuilt": true}
	for _, addr := range []string{metrics, probes} {
		for _, path := range []string{"/metrics", "/healthz", "/readyz", "/readyz/rebuilt", "/", "/livez", "/version", "/configz",
			"/debug/vars", "/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap", "/debug/pprof/goroutine?debug=2",
			"/debug/pprof/profile?seconds=1", "/metrics/extra"} {
			url := "http://" + addr + path
			code, body, err := get(ctx, url)
			switch {
			case err != nil:
				t.Errorf("GET %s: %v", url, err)
			case served[url] && code != http.StatusOK:
				t.Errorf("GET %s: %d, want 200", url, code)
			case !served[url] && code != http.StatusNotFound:
				t.Errorf("GET %s: %d, want 404 (it serves %q)", url, code, body[:min(len(body), 200)])
			}
		}
	}
	if _, body, _ := get(ctx, "http://"+metrics+"/metrics"); !strings.Contains(body, "braid_ipam_allocations_total") {
		t.Errorf("/metrics lacks braid_ipam_allocations_total")
	}

	stop()
	if strings.Contains(log.String(), tok) || strings.Contains(log.String(), tok[strings.LastIndex(tok, ".")+1:]) {
		t.Error("braid-ipam-server's log holds its token")
	}
	if !strings.Contains(strings.ToLower(log.String()), "successfully acquired lease") {
		t.Errorf("the debug log shows no leader election; was it captured?\n%s", log.String())
	}
}

func sortedCopy(s []int) []int {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
