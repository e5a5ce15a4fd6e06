package apiread

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// fakeServer answers like the API server for one pod: a read, and a watch with one MODIFIED event (the pod's
// deletion).
func fakeServer(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"kind":"Status","code":401,"reason":"Unauthorized","message":"Unauthorized"}`)
			return
		}
		switch {
		case r.URL.Path == "/api/v1/namespaces/ns/pods/p" && r.URL.Query().Get("watch") == "":
			fmt.Fprint(w, `{"kind":"PartialObjectMetadata","metadata":{"name":"p","namespace":"ns","uid":"u1","resourceVersion":"5"}}`+"\n")
		case r.URL.Path == "/api/v1/namespaces/ns/pods" && r.URL.Query().Get("watch") == "true":
			if r.URL.Query().Get("fieldSelector") != "metadata.name=p" || r.URL.Query().Get("resourceVersion") != "5" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			fmt.Fprint(w, `{"type":"MODIFIED","object":{"metadata":{"name":"p","uid":"u1","resourceVersion":"6","deletionTimestamp":"2025-01-02T03:04:05Z","annotations":{"a":"b"}}}}`+"\n")
			fmt.Fprint(w, `{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version"}}`+"\n")
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"kind":"Status","code":404,"reason":"NotFound","message":"pods \"q\" not found"}`)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func writeKubeconfig(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: %s
    certificate-authority: ca.crt
users:
- name: u
  user:
    tokenFile: token
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`, srv.URL)
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A read and the watch that follows share one connection (one TLS handshake per CNI call), events (with a
// pod's deletion) and the API server's errors decode, and a 404 is IsNotFound.
func TestReadThenWatchOnOneConnection(t *testing.T) {
	srv, conns := fakeServer(t)
	c, err := Load(writeKubeconfig(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	o, err := c.Get(ctx, "/api/v1/namespaces/ns/pods/p", "0")
	if err != nil {
		t.Fatal(err)
	}
	if o.Metadata.Name != "p" || o.Metadata.UID != "u1" || o.Metadata.ResourceVersion != "5" || o.Metadata.Deleting() {
		t.Errorf("metadata = %+v", o.Metadata)
	}
	w, err := c.Watch(ctx, "/api/v1/namespaces/ns/pods", "metadata.name=p", o.Metadata.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close() }()
	ev, err := w.Next()
	if err != nil || ev.Type != "MODIFIED" || ev.Object.Metadata.Annotations["a"] != "b" || !ev.Object.Metadata.Deleting() {
		t.Errorf("first event = %+v, %v", ev, err)
	}
	_, err = w.Next()
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 410 {
		t.Errorf("ERROR event = %v, want a 410 StatusError", err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for a read and a watch, want 1", n)
	}
	_, err = c.Get(ctx, "/api/v1/namespaces/ns/pods/q", "")
	if !IsNotFound(err) || err.Error() != `pods "q" not found` {
		t.Errorf("missing pod: %v, want the API server's 404", err)
	}
}
