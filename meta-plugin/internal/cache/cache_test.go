package cache

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestStore(t *testing.T) {
	s := Store{Dir: filepath.Join(t.TempDir(), "attachments")}
	if r, err := s.Load("c1"); r != nil || err != nil {
		t.Fatalf("Load of nothing = %v, %v", r, err)
	}
	if ids, err := s.List(); len(ids) != 0 || err != nil {
		t.Fatalf("List of nothing = %v, %v", ids, err)
	}
	rec := &Record{ContainerID: "c1", NetNS: "/var/run/netns/p", PodNamespace: "ns", PodName: "p", PodUID: "u",
		Attachments: []Attachment{{Network: "cbr0", IfName: "eth0", Master: true, Config: json.RawMessage(`{"name":"cbr0"}`)},
			{Network: "ns/a", IfName: "net1", Config: json.RawMessage(`{"name":"a"}`), CapabilityArgs: map[string]any{"mac": "02:00:00:00:00:01"}}}}
	if err := s.Save(rec); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(&Record{ContainerID: "c2"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load("c1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rec, got); diff != "" {
		t.Fatalf("(-saved +loaded):\n%s", diff)
	}
	ids, err := s.List()
	if err != nil || !cmp.Equal(ids, []string{"c1", "c2"}) {
		t.Fatalf("List = %v, %v", ids, err)
	}
	for range 2 {
		if err := s.Delete("c1"); err != nil {
			t.Fatal(err)
		}
	}
	if r, _ := s.Load("c1"); r != nil {
		t.Fatal("record still there after Delete")
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "bad.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load("bad"); err == nil {
		t.Fatal("a corrupt record loaded without error")
	}
}
