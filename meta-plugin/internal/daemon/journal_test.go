package daemon

import (
	"bytes"
	"maps"
	"testing"

	"github.com/braid-cni/braid/meta-plugin/internal/netstatus"
)

// journal is the journal of the given lines.
func journal(lines ...[]byte) []byte { return bytes.Join(lines, nil) }

func put(t *testing.T, w netstatus.Write) []byte {
	t.Helper()
	l, err := putLine(key(w), w)
	must(t, err)
	return l
}

// checkReplay replays data on an empty queue and checks what it queues and how many lines it skipped.
func checkReplay(t *testing.T, data []byte, want map[string]netstatus.Write, wantSkipped int) {
	t.Helper()
	got := map[string]netstatus.Write{}
	skipped := replay(got, data)
	if !maps.Equal(got, want) {
		t.Errorf("replay queues %v, want %v", got, want)
	}
	if len(skipped) != wantSkipped {
		t.Errorf("replay skipped %v, want %d lines", skipped, wantSkipped)
	}
}

// Lines apply in order: the latest put of a pod counts, a drop removes only what was put before it.
func TestJournalReplayAppliesPutsAndDropsInOrder(t *testing.T) {
	a1, a2 := queued("a", "s1", `"first"`), queued("a", "s2", `"second"`)
	b, c := queued("b", "sb", `"b"`), queued("c", "sc", `"c"`)
	data := journal(
		put(t, a1), put(t, b), put(t, a2), // a replaced
		dropLine("uid-b"),            // b dropped
		dropLine("uid-c"), put(t, c), // a drop before the put does not remove it
		dropLine("uid-unknown"))
	checkReplay(t, data, map[string]netstatus.Write{"uid-a": a2, "uid-c": c}, 0)
}

// The daemon died while it appended a line: the lines before it count, the torn one is skipped.
func TestJournalReplaySkipsATornLastLine(t *testing.T) {
	a, b := queued("a", "sa", `"a"`), queued("b", "sb", `"b"`)
	torn := put(t, b)
	data := journal(put(t, a), torn[:len(torn)/2])
	checkReplay(t, data, map[string]netstatus.Write{"uid-a": a}, 1)
	// A drop torn before its newline is still a whole drop.
	drop := dropLine("uid-a")
	checkReplay(t, journal(put(t, a), drop[:len(drop)-1]), map[string]netstatus.Write{}, 0)
}

// A broken line in the middle costs its own entry and nothing else: the lines after it still apply.
func TestJournalReplaySkipsAnUnparseableLine(t *testing.T) {
	a, b, c := queued("a", "sa", `"a"`), queued("b", "sb", `"b"`), queued("c", "sc", `"c"`)
	misfiled, err := putLine("uid-x", c) // a put under a key its write does not have
	must(t, err)
	data := journal(put(t, a), []byte("{not json\n"), []byte(`{"op":"rename","key":"uid-a"}`+"\n"),
		misfiled, []byte("\n"), put(t, b))
	checkReplay(t, data, map[string]netstatus.Write{"uid-a": a, "uid-b": b}, 3)
}
