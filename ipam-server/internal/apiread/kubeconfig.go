// Package apiread is braid-ipam's read-only access to the Kubernetes API: it loads a kubeconfig, and reads and
// watches the metadata of objects (PartialObjectMetadata), nothing more. braid-ipam is a fresh process for
// every CNI call, on every network of every pod; with client-go (its packages' initialisation, the clientcmd
// loader, HTTP/2) starting up took more CPU than the rest of the call, and under a burst of pods that CPU is
// taken from the API server and from braid-ipam-server. This package does what braid-ipam needs with the
// standard library.
package apiread

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// connectTimeout bounds the TCP connection and the TLS handshake to the API server.
const connectTimeout = 10 * time.Second

// kubeconfig is the part of a kubeconfig file braid-ipam reads, with kubectl's field names.
type kubeconfig struct {
	CurrentContext string `json:"current-context"`
	Clusters       []struct {
		Name    string  `json:"name"`
		Cluster cluster `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string `json:"name"`
		User user   `json:"user"`
	} `json:"users"`
	Contexts []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
}

type cluster struct {
	Server                   string `json:"server"`
	CertificateAuthority     string `json:"certificate-authority"`
	CertificateAuthorityData []byte `json:"certificate-authority-data"`
	InsecureSkipTLSVerify    bool   `json:"insecure-skip-tls-verify"`
	TLSServerName            string `json:"tls-server-name"`
	ProxyURL                 string `json:"proxy-url"`
}

type user struct {
	Token                 string          `json:"token"`
	TokenFile             string          `json:"tokenFile"`
	ClientCertificate     string          `json:"client-certificate"`
	ClientCertificateData []byte          `json:"client-certificate-data"`
	ClientKey             string          `json:"client-key"`
	ClientKeyData         []byte          `json:"client-key-data"`
	Exec                  json.RawMessage `json:"exec"`
	AuthProvider          json.RawMessage `json:"auth-provider"`
	Username              string          `json:"username"`
	As                    string          `json:"as"`
}

// Load reads the kubeconfig at path and returns a client for its current context. It understands what a node's
// kubeconfig holds: server, certificate authority (file or data), insecure-skip-tls-verify, tls-server-name,
// proxy-url, and a bearer token (token or tokenFile) or a client certificate (files or data). Relative file
// names are relative to the kubeconfig's directory, as for kubectl. Anything else (exec plugins, auth
// providers, basic auth, impersonation) is refused with the field named.
func Load(path string) (*Client, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(raw, &kc); err != nil {
		return nil, fmt.Errorf("not a kubeconfig: %w", err)
	}
	cl, u, err := kc.current()
	if err != nil {
		return nil, err
	}
	return newClient(cl, u, filepath.Dir(path))
}

// current resolves current-context to its cluster and user.
func (kc *kubeconfig) current() (*cluster, *user, error) {
	if kc.CurrentContext == "" {
		return nil, nil, errors.New("current-context is not set")
	}
	var clusterName, userName string
	found := false
	for _, c := range kc.Contexts {
		if c.Name == kc.CurrentContext {
			clusterName, userName, found = c.Context.Cluster, c.Context.User, true
		}
	}
	if !found {
		return nil, nil, fmt.Errorf("current-context %q is not in contexts", kc.CurrentContext)
	}
	var cl *cluster
	for i := range kc.Clusters {
		if kc.Clusters[i].Name == clusterName {
			cl = &kc.Clusters[i].Cluster
		}
	}
	if cl == nil {
		return nil, nil, fmt.Errorf("contexts[%s].context.cluster: cluster %q is not in clusters", kc.CurrentContext, clusterName)
	}
	u := &user{} // no user: anonymous
	if userName != "" {
		u = nil
		for i := range kc.Users {
			if kc.Users[i].Name == userName {
				u = &kc.Users[i].User
			}
		}
		if u == nil {
			return nil, nil, fmt.Errorf("contexts[%s].context.user: user %q is not in users", kc.CurrentContext, userName)
		}
	}
	return cl, u, nil
}

// newClient builds the HTTP client for a cluster and user; dir resolves relative file names.
func newClient(cl *cluster, u *user, dir string) (*Client, error) {
	switch {
	case len(u.Exec) > 0 && string(u.Exec) != "null":
		return nil, errors.New("users[].user.exec: credential plugins are not supported by braid-ipam; use a token, tokenFile or client certificate (braid's installer writes a tokenFile)")
	case len(u.AuthProvider) > 0 && string(u.AuthProvider) != "null":
		return nil, errors.New("users[].user.auth-provider: not supported by braid-ipam; use a token, tokenFile or client certificate")
	case u.Username != "":
		return nil, errors.New("users[].user.username: basic authentication is not supported by braid-ipam; use a token, tokenFile or client certificate")
	case u.As != "":
		return nil, errors.New("users[].user.as: impersonation is not supported by braid-ipam")
	}
	server, err := url.Parse(strings.TrimSuffix(cl.Server, "/"))
	if err != nil || server.Host == "" || (server.Scheme != "https" && server.Scheme != "http") {
		return nil, fmt.Errorf("clusters[].cluster.server: %q is not an http(s) URL", cl.Server)
	}
	tlsCfg, err := tlsConfig(cl, u, dir)
	if err != nil {
		return nil, err
	}
	c := &Client{server: server.String()}
	if c.token, err = token(u, dir); err != nil {
		return nil, err
	}
	proxy := http.ProxyFromEnvironment
	if cl.ProxyURL != "" {
		p, err := url.Parse(cl.ProxyURL)
		if err != nil {
			return nil, fmt.Errorf("clusters[].cluster.proxy-url: %w", err)
		}
		proxy = http.ProxyURL(p)
	}
	c.http = &http.Client{Transport: &http.Transport{
		Proxy:               proxy,
		DialContext:         (&net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: connectTimeout,
		MaxIdleConnsPerHost: 1,
	}}
	return c, nil
}

func tlsConfig(cl *cluster, u *user, dir string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cl.TLSServerName, InsecureSkipVerify: cl.InsecureSkipTLSVerify} //nolint:gosec // the kubeconfig asks for it
	ca, err := fileOrData("clusters[].cluster.certificate-authority", cl.CertificateAuthority, cl.CertificateAuthorityData, dir)
	if err != nil {
		return nil, err
	}
	if ca != nil {
		if cl.InsecureSkipTLSVerify {
			return nil, errors.New("clusters[].cluster: certificate-authority and insecure-skip-tls-verify are both set; keep one")
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(ca) {
			return nil, errors.New("clusters[].cluster.certificate-authority: no PEM certificate in it")
		}
	}
	cert, err := fileOrData("users[].user.client-certificate", u.ClientCertificate, u.ClientCertificateData, dir)
	if err != nil {
		return nil, err
	}
	key, err := fileOrData("users[].user.client-key", u.ClientKey, u.ClientKeyData, dir)
	if err != nil {
		return nil, err
	}
	switch {
	case cert != nil && key != nil:
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("users[].user.client-certificate / client-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	case cert != nil || key != nil:
		return nil, errors.New("users[].user: client-certificate and client-key go together; one of them is missing")
	}
	return cfg, nil
}

// token is the bearer token; tokenFile wins over token, as in client-go.
func token(u *user, dir string) (string, error) {
	if u.TokenFile == "" {
		return u.Token, nil
	}
	b, err := os.ReadFile(resolve(u.TokenFile, dir))
	if err != nil {
		return "", fmt.Errorf("users[].user.tokenFile: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("users[].user.tokenFile: %s is empty", u.TokenFile)
	}
	return t, nil
}

// fileOrData returns the contents named by a kubeconfig's file field or given by its -data field.
func fileOrData(field, file string, data []byte, dir string) ([]byte, error) {
	switch {
	case file != "" && len(data) > 0:
		return nil, fmt.Errorf("%s and %s-data are both set; keep one", field, field)
	case len(data) > 0:
		return data, nil
	case file != "":
		b, err := os.ReadFile(resolve(file, dir))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return b, nil
	}
	return nil, nil
}

func resolve(file, dir string) string {
	if filepath.IsAbs(file) {
		return file
	}
	return filepath.Join(dir, file)
}
