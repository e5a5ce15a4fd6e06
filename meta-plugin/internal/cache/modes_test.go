package cache

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestModes: with umask 0 (so only what the code sets counts), the records directory is 0700 and a record
// 0600, and a directory left 0755 (by an older braid, or by hand) is tightened by the next Save.
func TestModes(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)

	s := Store{Dir: filepath.Join(t.TempDir(), "braid", "attachments")}
	check := func(path string, want os.FileMode) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %o, want %o", path, fi.Mode().Perm(), want)
		}
	}
	if err := s.Save(&Record{ContainerID: "c1", PodNamespace: "ns", PodName: "p"}); err != nil {
		t.Fatal(err)
	}
	check(s.Dir, 0o700)
	check(filepath.Dir(s.Dir), 0o700) // created by the same MkdirAll
	check(s.path("c1"), 0o600)

	if err := os.Chmod(s.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(&Record{ContainerID: "c2"}); err != nil {
		t.Fatal(err)
	}
	check(s.Dir, 0o700)
	check(s.path("c2"), 0o600)
}
