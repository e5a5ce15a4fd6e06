package front

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
)

var (
	// invalidField is how a rejected value or key names its field (CNI code 7).
	invalidField = regexp.MustCompile(`^braid-ipam: ipam(?:\.pools\[\d+\]|\.[A-Za-z0-9_-]+|\[".*"\]): \S`)
	// decodeField is how a value of the wrong JSON type names its field (CNI code 6); "network config" is the
	// whole document.
	decodeField = regexp.MustCompile(`^braid-ipam: ([^: ]+|network config): \S`)
	// confKeys are the top-level keys of the network config that braid-ipam decodes.
	confKeys = map[string]bool{"cniVersion": true, "name": true, "type": true, "capabilities": true, "ipam": true,
		"dns": true, "prevResult": true, "cni.dev/valid-attachments": true}
)

// FuzzParseConf feeds arbitrary bytes to braid-ipam's network config parser. A rejection is a CNI error of
// code 6 or 7 whose message names the field; an acceptance has braid-ipam's type, valid IPPool names, an
// absolute kubeconfig and a positive timeout. Seed corpus: testdata/fuzz/FuzzParseConf.
func FuzzParseConf(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.0.0","name":"n","type":"macvlan","ipam":{"type":"braid-ipam","pools":["mgmt-rack1","mgmt-v6"]}}`,
		`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"braid-ipam","pools":["a"],"kubeconfig":"/k","timeout":"3s"}}`,
		`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local"}}`,
		`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"braid-ipam"}}`,
		`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"braid-ipam","pools":["a"],"timeout":"soon"}}`,
		`{"ipam":{"type":"braid-ipam","pools":"a"}}`, `{"ipam":{"type":"braid-ipam","pools":[""]}}`, `{`, `[]`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stdin []byte) {
		c, err := ParseConf(stdin)
		if err != nil {
			var e *types.Error
			if !errors.As(err, &e) {
				t.Fatalf("ParseConf(%q) error %v is not a CNI error", stdin, err)
			}
			switch e.Code {
			case types.ErrInvalidNetworkConfig:
				if !invalidField.MatchString(e.Msg) {
					t.Fatalf("ParseConf(%q) error %q does not name an ipam field", stdin, e.Msg)
				}
			case types.ErrDecodingFailure:
				m := decodeField.FindStringSubmatch(e.Msg)
				if m == nil || (m[1] != "network config" && !confKeys[strings.Split(m[1], ".")[0]]) {
					t.Fatalf("ParseConf(%q) error %q does not name a field of the network config", stdin, e.Msg)
				}
			default:
				t.Fatalf("ParseConf(%q) error has code %d, want 6 or 7: %v", stdin, e.Code, e)
			}
			return
		}
		if c.IPAM.Type != "braid-ipam" || len(c.IPAM.Pools) == 0 || !filepath.IsAbs(c.IPAM.Kubeconfig) || c.IPAM.Wait <= 0 {
			t.Fatalf("ParseConf(%q) accepted %+v", stdin, c.IPAM)
		}
		for _, p := range c.IPAM.Pools {
			if msgs := validation.IsDNS1123Subdomain(p); len(msgs) > 0 {
				t.Fatalf("ParseConf(%q) accepted the pool name %q: %v", stdin, p, msgs)
			}
		}
		if c.IPAM.Timeout == "" && c.IPAM.Wait != DefaultTimeout {
			t.Fatalf("ParseConf(%q) has timeout %s without ipam.timeout", stdin, c.IPAM.Wait)
		}
		var doc struct {
			IPAM map[string]json.RawMessage `json:"ipam"`
		}
		_ = json.Unmarshal(stdin, &doc)
		for k := range doc.IPAM {
			switch strings.ToLower(k) {
			case "type", "pools", "kubeconfig", "daemonsocket", "timeout":
			default:
				t.Fatalf("ParseConf(%q) accepted the ipam key %q, which braid-ipam does not read", stdin, k)
			}
		}
	})
}

// FuzzParseArgs feeds arbitrary CNI_ARGS to braid-ipam: a rejection names CNI_ARGS, and an acceptance holds
// the pod's namespace and name exactly as the last K8S_POD_* entries say.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"K8S_POD_NAMESPACE=a;K8S_POD_NAME=b", "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u-1",
		"", "K8S_POD_NAME=p", "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b;K8S_POD_NAME", "=;==;K8S_POD_NAMESPACE==",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, args string) {
		p, err := ParseArgs(args)
		if err != nil {
			var e *types.Error
			if !errors.As(err, &e) || e.Code != types.ErrInvalidNetworkConfig || !strings.HasPrefix(e.Msg, "braid-ipam: CNI_ARGS: ") {
				t.Fatalf("ParseArgs(%q) error %v does not name CNI_ARGS", args, err)
			}
			return
		}
		last := map[string]string{}
		for _, kv := range strings.Split(args, ";") {
			k, v, _ := strings.Cut(kv, "=")
			last[k] = v
		}
		if p.Namespace == "" || p.Name == "" || p.Namespace != last["K8S_POD_NAMESPACE"] || p.Name != last["K8S_POD_NAME"] ||
			p.UID != last["K8S_POD_UID"] {
			t.Fatalf("ParseArgs(%q) = %+v", args, p)
		}
	})
}
