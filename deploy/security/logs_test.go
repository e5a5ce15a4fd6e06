package security_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/testenv"
)

// output is what one process printed, by where it went.
type output struct {
	name, text string
}

// cni runs a CNI plugin binary as the container runtime does, and returns its stdout and stderr.
func cni(t *testing.T, bin, command, ifName string, stdin []byte, pod *corev1.Pod) []output {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + strings.ToLower(rand.Text()), "CNI_NETNS=/var/run/netns/braid-security-none",
		"CNI_IFNAME=" + ifName, "CNI_PATH=" + filepath.Dir(bin),
		fmt.Sprintf("CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_UID=%s", pod.Namespace, pod.Name, pod.UID)}
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	name := fmt.Sprintf("%s %s of pod %s", filepath.Base(bin), command, pod.Name)
	t.Logf("%s: exit %v\nstdout: %s\nstderr: %s", name, err, stdout.String(), stderr.String())
	return []output{{name + " stdout", stdout.String()}, {name + " stderr", stderr.String()}}
}

// replaceFile swaps a file's content by rename, as the kubelet rotates a projected token.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path+".new", []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// TestNoSecretInLogs runs `braid install` (the DaemonSet's entry point, at debug level) with a token file, then
// braid and braid-ipam as the runtime runs them through their error paths, at debug level and with braid's
// log file: first with a token the API server rejects, then with a real pod-bound one after the installer
// copied it. Nothing any of them printed or logged, nor the Events braid recorded, holds the token.
func TestNoSecretInLogs(t *testing.T) {
	bin := binaries(t)
	ctx := t.Context()
	dir := t.TempDir()
	mkNodes(t, "node-a")
	ns := env.Namespace(t)
	web := newPod(ns, "web", "node-a")
	web.Annotations["k8s.v1.cni.cncf.io/networks"] = "missing-network"
	if err := env.Client.Create(ctx, web); err != nil {
		t.Fatal(err)
	}
	gone := newPod(ns, "gone", "node-a") // never created

	fake := "braid-fake-token-" + rand.Text()
	bound := token(t, nodeSA, daemonPod(t, "node-a"))
	secrets := map[string]string{"the rejected token": fake, "the pod-bound token": bound,
		"the pod-bound token's signature": bound[strings.LastIndex(bound, ".")+1:]}

	sa, confDir, logFile := filepath.Join(dir, "sa"), filepath.Join(dir, "net.d"), filepath.Join(dir, "log", "braid.log")
	for path, content := range map[string]string{
		filepath.Join(sa, "token"):                 fake,
		filepath.Join(sa, "ca.crt"):                string(env.Config.CAData),
		filepath.Join(confDir, "10-cbr0.conflist"): `{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge","bridge":"cni0"}]}`,
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		replaceFile(t, path, content)
	}
	extra, err := json.Marshal(map[string]any{"logFile": logFile, "logLevel": "debug", "logToStderr": true,
		"cniDir": filepath.Join(dir, "cni"), "podLookupTimeoutSeconds": 1})
	if err != nil {
		t.Fatal(err)
	}
	install := exec.Command(filepath.Join(bin, "braid"), "install", "-binaries=", "-bin-dir", filepath.Join(dir, "bin"),
		"-conf-dir", confDir, "-host-conf-dir", confDir, "-api-server", env.Config.Host, "-ca-file", filepath.Join(sa, "ca.crt"),
		"-token-file", filepath.Join(sa, "token"), "-braid-conf", string(extra), "-resync", "200ms", "-debug")
	installLog := &testenv.OutputBuffer{}
	install.Stdout, install.Stderr = installLog, installLog
	if err := install.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = install.Process.Signal(syscall.SIGTERM)
			_ = install.Wait()
		}
	}
	defer stop()
	copied := filepath.Join(confDir, "braid.d", "token")
	waitFile(t, copied, fake)

	// braid's conf as the runtime hands it to braid: the plugin's, with the list's name and version.
	list, err := libcni.ConfListFromFile(filepath.Join(confDir, "00-braid.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	braidConf, err := libcni.InjectConf(list.Plugins[0], map[string]any{"name": list.Name, "cniVersion": list.CNIVersion})
	if err != nil {
		t.Fatal(err)
	}
	var kubeconfig struct {
		Kubeconfig string `json:"kubeconfig"`
	}
	if err := json.Unmarshal(braidConf.Bytes, &kubeconfig); err != nil || kubeconfig.Kubeconfig == "" {
		t.Fatalf("braid's conf names no kubeconfig: %s (%v)", braidConf.Bytes, err)
	}
	ipamConf := []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"mgmt","type":"macvlan","ipam":{"type":"braid-ipam","pools":["mgmt"],"kubeconfig":%q,"timeout":"1s"}}`,
		kubeconfig.Kubeconfig))
	braidBin, ipamBin := filepath.Join(bin, "braid"), filepath.Join(bin, "braid-ipam")

	var outs []output
	// The API server rejects the token.
	outs = append(outs, cni(t, braidBin, "ADD", "eth0", braidConf.Bytes, web)...)
	outs = append(outs, cni(t, braidBin, "DEL", "eth0", braidConf.Bytes, web)...)
	outs = append(outs, cni(t, ipamBin, "ADD", "net1", ipamConf, web)...)
	// The kubelet rotates in a real pod-bound token: the pod is found, and later steps fail.
	replaceFile(t, filepath.Join(sa, "token"), bound)
	waitFile(t, copied, bound)
	outs = append(outs, cni(t, braidBin, "ADD", "eth0", braidConf.Bytes, web)...)
	outs = append(outs, cni(t, braidBin, "ADD", "eth0", braidConf.Bytes, gone)...)
	outs = append(outs, cni(t, ipamBin, "ADD", "net1", ipamConf, web)...)
	stop()

	logged, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("braid wrote no log file: %v", err)
	}
	outs = append(outs, output{"braid install's log", installLog.String()}, output{"braid's log file", string(logged)})
	events := &corev1.EventList{}
	if err := env.Client.List(ctx, events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range events.Items {
		outs = append(outs, output{"Event " + e.Reason, e.Message})
	}

	// The error paths ran and were logged; else this test would prove nothing.
	all := ""
	for _, o := range outs {
		all += o.text
	}
	for _, want := range []string{"Unauthorized", "missing-network", ns + "/gone", "has not assigned", "wrote service account token"} {
		if !strings.Contains(all, want) {
			t.Errorf("no output says %q: the error path it stands for did not run", want)
		}
	}
	if len(events.Items) == 0 {
		t.Error("braid recorded no Event for the failed ADD")
	}
	for _, o := range outs {
		for what, s := range secrets {
			if strings.Contains(o.text, s) {
				t.Errorf("%s holds %s", o.name, what)
			}
		}
	}
}

// waitFile waits until path holds content.
func waitFile(t *testing.T, path, content string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil && string(b) == content {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never held the expected content", path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
