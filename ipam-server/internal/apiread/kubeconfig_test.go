package apiread

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned returns a PEM certificate and key.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func kubeconfigWith(cluster, user string) string {
	return `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
` + indent(cluster) + `users:
- name: u
  user:
` + indent(user) + `contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`
}

func indent(block string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(block), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t)
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.crt", cert)
	write("node.crt", cert)
	write("node.key", key)
	write("token", []byte("from-file\n"))
	write("empty", []byte("\n"))
	b64 := base64.StdEncoding.EncodeToString
	server := "server: https://192.0.2.1:6443\n"

	cases := []struct {
		name, cluster, user string
		wantErr             string // "" = loads
		check               func(*testing.T, *Client)
	}{
		{name: "token and CA file", cluster: server + "certificate-authority: ca.crt", user: "token: abc",
			check: func(t *testing.T, c *Client) {
				if c.token != "abc" || c.server != "https://192.0.2.1:6443" {
					t.Errorf("token %q server %q", c.token, c.server)
				}
			}},
		{name: "tokenFile (relative) wins over token", cluster: server + "certificate-authority-data: " + b64(cert),
			user: "token: abc\ntokenFile: token",
			check: func(t *testing.T, c *Client) {
				if c.token != "from-file" {
					t.Errorf("token %q, want the file's", c.token)
				}
			}},
		{name: "client certificate files", cluster: server + "certificate-authority: ca.crt", user: "client-certificate: node.crt\nclient-key: node.key"},
		{name: "client certificate data", cluster: server + "insecure-skip-tls-verify: true",
			user: "client-certificate-data: " + b64(cert) + "\nclient-key-data: " + b64(key)},
		{name: "exec plugin", cluster: server, user: "exec: {command: get-token, apiVersion: client.authentication.k8s.io/v1}",
			wantErr: "users[].user.exec: credential plugins are not supported"},
		{name: "auth provider", cluster: server, user: "auth-provider: {name: oidc}", wantErr: "users[].user.auth-provider"},
		{name: "basic auth", cluster: server, user: "username: admin\npassword: x", wantErr: "users[].user.username"},
		{name: "impersonation", cluster: server, user: "token: abc\nas: someone", wantErr: "users[].user.as"},
		{name: "CA file and data", cluster: server + "certificate-authority: ca.crt\ncertificate-authority-data: " + b64(cert),
			user: "token: abc", wantErr: "certificate-authority and clusters[].cluster.certificate-authority-data are both set"},
		{name: "CA and insecure", cluster: server + "certificate-authority: ca.crt\ninsecure-skip-tls-verify: true", user: "token: abc",
			wantErr: "certificate-authority and insecure-skip-tls-verify are both set"},
		{name: "CA without a certificate", cluster: server + "certificate-authority: token", user: "token: abc",
			wantErr: "certificate-authority: no PEM certificate"},
		{name: "missing CA file", cluster: server + "certificate-authority: nope.crt", user: "token: abc",
			wantErr: "clusters[].cluster.certificate-authority: open " + filepath.Join(dir, "nope.crt")},
		{name: "certificate without key", cluster: server, user: "client-certificate: node.crt", wantErr: "one of them is missing"},
		{name: "empty token file", cluster: server, user: "tokenFile: empty", wantErr: "users[].user.tokenFile: empty is empty"},
		{name: "server not a URL", cluster: "server: 192.0.2.1:6443", user: "token: abc", wantErr: "clusters[].cluster.server"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".kubeconfig")
			if err := os.WriteFile(path, []byte(kubeconfigWith(tc.cluster, tc.user)), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(path)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Load: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Load = %v, want an error containing %q", err, tc.wantErr)
			case tc.check != nil:
				tc.check(t, c)
			}
		})
	}
}

func TestLoadContexts(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct{ kc, wantErr string }{
		"no current-context": {kc: "clusters: []\n", wantErr: "current-context is not set"},
		"unknown context":    {kc: "current-context: other\ncontexts: [{name: x, context: {cluster: c}}]\n", wantErr: `current-context "other" is not in contexts`},
		"unknown cluster":    {kc: "current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n", wantErr: `cluster "c" is not in clusters`},
		"unknown user": {kc: "current-context: x\nclusters: [{name: c, cluster: {server: 'https://192.0.2.1'}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n",
			wantErr: `user "u" is not in users`},
		"not YAML": {kc: "clusters: [", wantErr: "not a kubeconfig"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
			if err := os.WriteFile(path, []byte(tc.kc), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Load(path); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Load = %v, want %q", err, tc.wantErr)
			}
		})
	}
}
