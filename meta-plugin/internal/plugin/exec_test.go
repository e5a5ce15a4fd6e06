package plugin

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "delegate")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// A delegate that prints without end fails its call with the limit named, and braid keeps none of it: the
// node daemon's memory serves every pod of the node.
func TestDelegateFloodingStdoutFailsNamingTheLimit(t *testing.T) {
	e := newDelegateExec(nil)
	out, err := e.ExecPlugin(t.Context(), script(t, "head -c 20000000 /dev/zero"), nil, os.Environ())
	if err == nil || !strings.Contains(err.Error(), "more than 16 MiB on stdout") {
		t.Fatalf("ExecPlugin = %d bytes, %v; want an error naming the 16 MiB limit", len(out), err)
	}
}

// A delegate that fails after flooding stdout gets the same short error, not its 16 MiB as the message.
func TestDelegateFailingAfterFloodingStdoutFailsShort(t *testing.T) {
	e := newDelegateExec(nil)
	_, err := e.ExecPlugin(t.Context(), script(t, "head -c 20000000 /dev/zero; exit 3"), nil, os.Environ())
	if err == nil || !strings.Contains(err.Error(), "more than 16 MiB on stdout") || len(err.Error()) > 1000 {
		t.Fatalf("ExecPlugin error of %d bytes, want a short one naming the 16 MiB limit", len(fmt.Sprint(err)))
	}
}

// A delegate's stderr is passed on up to its limit, with a note that it was cut; its result still counts.
func TestDelegateFloodingStderrIsCut(t *testing.T) {
	var logged bytes.Buffer
	e := newDelegateExec(&logged)
	out, err := e.ExecPlugin(t.Context(), script(t, `head -c 2000000 /dev/zero >&2; echo '{"cniVersion":"1.0.0"}'`), nil, os.Environ())
	if err != nil || strings.TrimSpace(string(out)) != `{"cniVersion":"1.0.0"}` {
		t.Fatalf("ExecPlugin = %q, %v; want the result", out, err)
	}
	if logged.Len() > maxDelegateStderr+200 || !strings.Contains(logged.String(), "stderr cut at 64 KiB") {
		t.Fatalf("passed on %d bytes of stderr, want at most %d and the note", logged.Len(), maxDelegateStderr)
	}
}
