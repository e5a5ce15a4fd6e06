package plugin_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/braid-cni/braid/ipam-server/internal/plugin"
)

// fakeAPI is an API server that serves h, and a kubeconfig for it.
func fakeAPI(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	path := filepath.Join(t.TempDir(), "fake.kubeconfig")
	must(t, os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`, srv.URL)), 0o600))
	return path
}

// addVia runs ADD in-process for pod ns/p (UID u1) on net1 against the API server of kubeconfig, no daemon.
func addVia(kubeconfig, timeout string) error {
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"braid-ipam","pools":["p"],"kubeconfig":%q,`+
		`"timeout":%q,"daemonSocket":"/nonexistent/braid.sock"}}`, kubeconfig, timeout)
	p := &plugin.Plugin{NewClient: plugin.NewClientFromKubeconfig}
	return p.Add(&skel.CmdArgs{ContainerID: "c", Netns: "/var/run/netns/x", IfName: "net1",
		Args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u1", StdinData: []byte(conf)})
}

// An API server that refuses or ends every watch at once (overloaded: 429; or RBAC without watch) must not
// be read in a tight loop until the deadline: braid-ipam spaces its reads as it does when GET fails.
func TestAddSpacesReadsWhenTheWatchFails(t *testing.T) {
	for _, tc := range []struct {
		name  string
		watch func(w http.ResponseWriter)
	}{
		{"429", func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"kind":"Status","code":429,"reason":"TooManyRequests","message":"too many requests"}`)
		}},
		{"closed", func(http.ResponseWriter) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var gets atomic.Int32
			kc := fakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Query().Get("watch") == "true" {
					tc.watch(w)
					return
				}
				gets.Add(1)
				fmt.Fprint(w, `{"metadata":{"name":"p","namespace":"ns","uid":"u1","resourceVersion":"5"}}`)
			})
			start := time.Now()
			err := addVia(kc, "1s")
			var cniErr *types.Error
			if !errors.As(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater {
				t.Fatalf("ADD = %v, want code 11", err)
			}
			if n := gets.Load(); n > 10 {
				t.Errorf("ADD read the pod %d times in %v; a failing watch must not make it spin", n, time.Since(start))
			}
		})
	}
}

// A prevResult with a null entry (a broken plugin earlier in the chain) is bad input: CHECK fails with code 6
// naming prevResult, and never panics, in every version that has CHECK.
func TestCheckRejectsNullsInPrevResult(t *testing.T) {
	kc := fakeAPI(t, func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"metadata":{"name":"p","namespace":"ns","uid":"u1","resourceVersion":"5","annotations":{"braid.dev/ip-assignments":`+
			`"{\"podUID\":\"u1\",\"interfaces\":{\"net1\":{\"network\":\"ns/n\",\"addresses\":[{\"pool\":\"p\",\"floatingIP\":\"f\",\"cidr\":\"192.0.2.10/24\"}]}}}"}}}`)
	})
	for _, ver := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		for _, prev := range []string{`{"ips":[null]}`, `{"ips":[{"address":"192.0.2.10/24"}],"routes":[null]}`, `{"interfaces":[null]}`} {
			t.Run(ver+prev, func(t *testing.T) {
				prev := strings.Replace(prev, "{", fmt.Sprintf(`{"cniVersion":%q,`, ver), 1)
				if ver == "0.4.0" {
					prev = strings.ReplaceAll(prev, `"address"`, `"version":"4","address"`)
				}
				conf := fmt.Sprintf(`{"cniVersion":%q,"name":"n","ipam":{"type":"braid-ipam","pools":["p"],"kubeconfig":%q,`+
					`"timeout":"1s","daemonSocket":"/nonexistent/braid.sock"},"prevResult":%s}`, ver, kc, prev)
				p := &plugin.Plugin{NewClient: plugin.NewClientFromKubeconfig}
				var err error
				func() {
					defer func() {
						if r := recover(); r != nil {
							err = fmt.Errorf("panic: %v", r)
						}
					}()
					err = p.Check(&skel.CmdArgs{ContainerID: "c", Netns: "/var/run/netns/x", IfName: "net1",
						Args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u1", StdinData: []byte(conf)})
				}()
				var cniErr *types.Error
				if !errors.As(err, &cniErr) || cniErr.Code != types.ErrDecodingFailure || !strings.Contains(cniErr.Msg, "prevResult") {
					t.Fatalf("CHECK = %v, want code 6 naming prevResult", err)
				}
			})
		}
	}
}

// When braid-ipam-server recorded the pod's interfaces but not this one (the pod's annotation names it
// otherwise, or the server could not read its NAD), ADD's reason says which interfaces the server knows, not
// that the server may not be running.
func TestAddNamesTheInterfacesTheServerAssigned(t *testing.T) {
	kc := fakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("watch") == "true" {
			w.(http.Flusher).Flush() // a watch that sees no change
			<-r.Context().Done()
			return
		}
		fmt.Fprint(w, `{"metadata":{"name":"p","namespace":"ns","uid":"u1","resourceVersion":"5","annotations":{"braid.dev/ip-assignments":`+
			`"{\"podUID\":\"u1\",\"interfaces\":{\"net2\":{\"network\":\"ns/n\",\"addresses\":[{\"pool\":\"p\",\"floatingIP\":\"f\",\"cidr\":\"192.0.2.10/24\"}]}}}"}}}`)
	})
	err := addVia(kc, "500ms")
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater || !strings.Contains(cniErr.Msg, "interfaces [net2] but not net1") {
		t.Fatalf("ADD = %v, want code 11 saying the server assigned net2, not net1", err)
	}
}

// An API server slow to open the watch (overloaded) when the deadline passes: ADD still fails with the reason
// braid-ipam-server recorded, not with its own "context deadline exceeded".
func TestAddKeepsTheServersReasonWhenTheWatchIsSlow(t *testing.T) {
	kc := fakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("watch") == "true" {
			<-r.Context().Done() // no answer, not even headers
			return
		}
		fmt.Fprint(w, `{"metadata":{"name":"p","namespace":"ns","uid":"u1","resourceVersion":"5","annotations":{"braid.dev/ip-assignments":`+
			`"{\"podUID\":\"u1\",\"interfaces\":{\"net1\":{\"network\":\"ns/n\",\"error\":\"pool exhausted: IPPool p has no free address\"}}}"}}}`)
	})
	err := addVia(kc, "500ms")
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater || !strings.HasSuffix(cniErr.Msg, ": pool exhausted: IPPool p has no free address") {
		t.Fatalf("ADD = %v, want code 11 with the server's reason", err)
	}
}

// CHECK of a pod recreated under the same name, whose new object carries the first one's assignment (its
// manifest was re-applied from `kubectl get -o yaml`): the assignment is not the pod's, so CHECK fails, with
// or without K8S_POD_UID.
func TestCheckRefusesAnotherIncarnationsAssignment(t *testing.T) {
	kc := fakeAPI(t, func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"metadata":{"name":"p","namespace":"ns","uid":"u2","resourceVersion":"5","annotations":{"braid.dev/ip-assignments":`+
			`"{\"podUID\":\"u1\",\"interfaces\":{\"net1\":{\"network\":\"ns/n\",\"addresses\":[{\"pool\":\"p\",\"floatingIP\":\"f\",\"cidr\":\"192.0.2.10/24\"}]}}}"}}}`)
	})
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"braid-ipam","pools":["p"],"kubeconfig":%q,"timeout":"1s"},`+
		`"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"192.0.2.10/24"}]}}`, kc)
	for _, args := range []string{"K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u1", "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p"} {
		p := &plugin.Plugin{NewClient: plugin.NewClientFromKubeconfig}
		if err := p.Check(&skel.CmdArgs{ContainerID: "c", Netns: "/var/run/netns/x", IfName: "net1", Args: args, StdinData: []byte(conf)}); err == nil {
			t.Errorf("CHECK with %s passed on pod u2 carrying pod u1's assignment", args)
		}
	}
}

// braid-ipam-api started by braid-ipam for an ADD the node daemon could not answer (DaemonAsked) reads the API
// server without asking the daemon again: the daemon may take a second to say it has not seen the pod.
func TestAddAfterBraidIPAMAskedTheDaemonGoesStraightToTheAPI(t *testing.T) {
	kc := fakeAPI(t, func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"metadata":{"name":"p","namespace":"ns","uid":"u1","resourceVersion":"5","annotations":{"braid.dev/ip-assignments":`+
			`"{\"podUID\":\"u1\",\"interfaces\":{\"net1\":{\"network\":\"ns/n\",\"addresses\":[{\"pool\":\"p\",\"floatingIP\":\"f\",\"cidr\":\"192.0.2.10/24\"}]}}}"}}}`)
	})
	socket := filepath.Join(t.TempDir(), "braid.sock")
	l, err := net.Listen("unix", socket)
	must(t, err)
	t.Cleanup(func() { _ = l.Close() })
	var asked atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			asked.Add(1)
			_ = c.Close() // no answer: braid-ipam then reads the API server
		}
	}()
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"braid-ipam","pools":["p"],"kubeconfig":%q,"timeout":"5s","daemonSocket":%q}}`, kc, socket)
	for _, daemonAsked := range []bool{false, true} {
		before := asked.Load()
		p := &plugin.Plugin{NewClient: plugin.NewClientFromKubeconfig, DaemonAsked: daemonAsked}
		stdout := os.Stdout
		devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		must(t, err)
		os.Stdout = devNull // ADD prints its result
		err = p.Add(&skel.CmdArgs{ContainerID: "c", Netns: "/var/run/netns/x", IfName: "net1",
			Args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u1", StdinData: []byte(conf)})
		os.Stdout = stdout
		_ = devNull.Close()
		if err != nil {
			t.Fatalf("DaemonAsked %v: ADD = %v", daemonAsked, err)
		}
		want := int32(1)
		if daemonAsked {
			want = 0
		}
		if got := asked.Load() - before; got != want {
			t.Errorf("DaemonAsked %v: the daemon was asked %d times, want %d", daemonAsked, got, want)
		}
	}
}
