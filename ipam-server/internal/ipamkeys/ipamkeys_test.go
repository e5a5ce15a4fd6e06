package ipamkeys

import (
	"strings"
	"testing"
)

func TestUnknownIPAMKey(t *testing.T) {
	for _, c := range []struct {
		section, key, fix string
	}{
		{`{"type":"braid-ipam","pools":["a"],"kubeconfig":"/k","daemonSocket":"/s","timeout":"3s"}`, "", ""},
		{`{"type":"braid-ipam","pools":["a"],"routes":[{"dst":"0.0.0.0/0"}]}`, "routes", "set spec.routes on the pool and remove routes here"},
		{`{"type":"braid-ipam","pools":["a"],"range":"192.0.2.0/24","gateway":"192.0.2.1"}`, "gateway", "set spec.gateway on the pool"},
		{`{"type":"braid-ipam","pools":["a"],"dns":{}}`, "dns", "set spec.dns on the pool"},
		{`{"type":"braid-ipam","pools":["a"],"addresses":[]}`, "addresses", `"ips" in its network selection annotation`},
		{`{"type":"braid-ipam","pool":["a"]}`, "pool", "is not a braid-ipam key (it takes type, pools, kubeconfig, daemonSocket, timeout): remove it or correct its spelling"},
		{`{"Type":"braid-ipam","Pools":["a"],"TIMEOUT":"1s"}`, "", ""},
		{`{"type":"braid-ipam","pools":["a"],"odd key":1}`, "odd key", "is not a braid-ipam key"},
		{`["not", "an", "object"]`, "", ""},
	} {
		key, fix := UnknownIPAMKey([]byte(c.section))
		if key != c.key || !strings.Contains(fix, c.fix) || (c.key == "") != (fix == "") {
			t.Errorf("UnknownIPAMKey(%s) = %q, %q; want %q and a fix containing %q", c.section, key, fix, c.key, c.fix)
		}
	}
}

func TestKeyPath(t *testing.T) {
	for key, want := range map[string]string{"routes": ".routes", "range_start": ".range_start", "odd key": `["odd key"]`, `a"b`: `["a\"b"]`, "": `[""]`, "ünï": `["ünï"]`} {
		if got := KeyPath(key); got != want {
			t.Errorf("KeyPath(%q) = %s, want %s", key, got, want)
		}
	}
}
