package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/braid-cni/braid/meta-plugin/internal/netstatus"
)

// journalFile is the status queue's journal in its directory. It cannot be a pod's key (the file name of a
// write the previous braid version queued): it is neither a UID nor holds the '_' of namespace_name.
const journalFile = "journal"

// The journal is the status queue on disk: one JSON line per change, appended in one write(2) to a file that
// is already open, so that queueing a write on the ADD path creates no file. Replaying its lines in order
// gives the queued writes: a put sets a pod's write, a drop removes it.
const (
	opPut  = "put"
	opDrop = "drop"
)

// entry is one line of the journal. A put's key is the one its Write has (key); it is kept in the line so
// that replay can tell a line that does not belong together.
type entry struct {
	Op    string           `json:"op"`
	Key   string           `json:"key"`
	Write *netstatus.Write `json:"write,omitempty"`
}

// putLine is the journal line queueing w under k.
func putLine(k string, w netstatus.Write) ([]byte, error) {
	return line(entry{Op: opPut, Key: k, Write: &w})
}

// dropLine is the journal line removing k's write.
func dropLine(k string) []byte {
	l, err := line(entry{Op: opDrop, Key: k})
	if err != nil {
		panic(err) // a string cannot fail to encode
	}
	return l
}

// line encodes e with its newline; JSON has no raw newline inside, so one line is one entry.
func line(e entry) ([]byte, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// replay applies the journal data to pending, line by line, in order. A line it cannot read (the torn last
// line of a write the daemon died in, or anything else broken) is skipped, and reported in skipped, so that
// one bad line costs one write and not the queue: the lines after it still apply.
func replay(pending map[string]netstatus.Write, data []byte) (skipped []error) {
	for n := 1; len(data) > 0; n++ {
		var l []byte
		l, data, _ = bytes.Cut(data, []byte{'\n'})
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		if err := apply(pending, l); err != nil {
			skipped = append(skipped, fmt.Errorf("journal line %d: %w", n, err))
		}
	}
	return skipped
}

// apply applies one journal line to pending.
func apply(pending map[string]netstatus.Write, l []byte) error {
	var e entry
	if err := json.Unmarshal(l, &e); err != nil {
		return err
	}
	switch {
	case e.Op == opPut && e.Write != nil && key(*e.Write) == e.Key:
		pending[e.Key] = *e.Write
	case e.Op == opDrop && e.Key != "":
		delete(pending, e.Key)
	default:
		return errors.New("not a put of a write under its key, nor a drop")
	}
	return nil
}
