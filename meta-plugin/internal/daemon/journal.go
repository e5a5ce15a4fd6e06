package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/braid-cni/braid/meta-plugin/internal/netstatus"
)

// journalFile is the status queue's journal in its directory. It cannot be a pod's key (the file name of a
// write the previous braid version queued): it is neither a UID nor holds the '_' of namespace_name.
const journalFile = "journal"

// journalLimit is the journal's length past which the worker compacts it. A put is about 300 bytes and a
// drop 50: some thousands of writes between compactions, each an emptied file or, with writes queued, one
// file made and renamed (what every write cost before the journal).
const journalLimit = 1 << 20

// The journal is the status queue on disk: one JSON line per change, appended in one write(2) to a file that
// is already open, so that queueing a write on the ADD path creates no file. Replaying its lines in order
// gives the queued writes: a put sets a pod's write, a drop removes it.
const (
	opPut  = "put"
	opDrop = "drop"
)

// entry is one line of the journal. A put carries its key besides its Write, and replay skips a put whose
// Write has another key (key), as Reload drops a per-pod file named for another pod than its write's.
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

// appendLine appends l to the journal, opening it first if this queue has not (it never reloaded: a daemon
// made while another still holds the directory); q.mu is held. After a failed append the journal is closed,
// so that the next one reopens it and ends whatever part of l was written before it appends.
func (q *StatusQueue) appendLine(l []byte) error {
	if q.journal == nil {
		if err := q.openJournal(); err != nil {
			return err
		}
	}
	n, err := q.journal.Write(l)
	q.size += int64(n)
	if err != nil {
		_ = q.journal.Close()
		q.journal = nil
		return err
	}
	return nil
}

// openJournal opens the journal for appending, making it if there is none; q.mu is held. A journal that ends
// in a torn line (its writer died in the middle of an append) gets the line's end first, so that the next
// line is not glued to the torn one and skipped with it.
func (q *StatusQueue) openJournal() error {
	if q.journal != nil {
		_ = q.journal.Close()
		q.journal = nil
	}
	f, err := os.OpenFile(filepath.Join(q.dir, journalFile), os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	size, err := endLastLine(f)
	if err != nil {
		_ = f.Close()
		return err
	}
	q.journal, q.size = f, size
	return nil
}

// endLastLine ends f's last line if it has no newline, and returns f's length.
func endLastLine(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return 0, err
	}
	last := []byte{0}
	if _, err := f.ReadAt(last, fi.Size()-1); err != nil || last[0] == '\n' {
		return fi.Size(), err
	}
	n, err := f.Write([]byte{'\n'})
	return fi.Size() + int64(n), err
}

// rewriteJournal replaces the journal with one put per write in pending and opens it for appending; q.mu is
// held. The new journal is written aside and renamed over the old one, so that a daemon dying meanwhile
// leaves one of the two whole.
func (q *StatusQueue) rewriteJournal(pending map[string]netstatus.Write) error {
	var data []byte
	for k, w := range pending {
		l, err := putLine(k, w)
		if err != nil {
			return err
		}
		data = append(data, l...)
	}
	if err := writeFile(q.dir, journalFile, data); err != nil {
		return err
	}
	return q.openJournal()
}

// compactJournal keeps the journal from growing without end: past q.maxJournal, it is emptied when no write is
// queued, or else rewritten to the queued writes; q.mu is held. The worker calls it once it is done with a
// write, so that an ADD's Write never does it (a Write that comes meanwhile waits for q.mu).
func (q *StatusQueue) compactJournal() {
	if q.size <= q.maxJournal {
		return
	}
	var err error
	if len(q.pending) == 0 && q.journal != nil {
		if err = q.journal.Truncate(0); err == nil {
			q.size = 0
		}
	} else {
		err = q.rewriteJournal(q.pending)
	}
	if err != nil {
		q.log.Error("status queue journal not compacted", "size", q.size, "err", err)
	}
}

// replayJournal applies the journal to pending, warning of each line it skips.
func (q *StatusQueue) replayJournal(pending map[string]netstatus.Write) error {
	data, err := os.ReadFile(filepath.Join(q.dir, journalFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("status queue journal: %w", err)
	}
	for _, err := range replay(pending, data) {
		q.log.Warn("unreadable queued network-status write dropped", "file", journalFile, "err", err)
	}
	return nil
}

// readPerPodFiles reads the writes the previous braid version queued, one file per pod named by its key, and
// returns them with the names of their files, to be removed once the journal holds them. A file it cannot
// read is removed at once, as is an interrupted write: a temporary file, named with a leading '.' (both that
// version's and an interrupted rewrite of the journal).
func (q *StatusQueue) readPerPodFiles() (map[string]netstatus.Write, []string, error) {
	entries, err := os.ReadDir(q.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("status queue dir: %w", err)
	}
	pending := map[string]netstatus.Write{}
	var names []string
	for _, de := range entries {
		name := de.Name()
		if name == journalFile {
			continue
		}
		path := filepath.Join(q.dir, name)
		if strings.HasPrefix(name, ".") {
			_ = os.Remove(path)
			continue
		}
		w, err := readPerPodFile(path)
		if err != nil || key(w) != name {
			q.log.Warn("unreadable queued network-status write dropped", "file", name, "err", err)
			_ = os.Remove(path)
			continue
		}
		pending[name] = w
		names = append(names, name)
	}
	return pending, names, nil
}

// readPerPodFile reads one write the previous braid version queued.
func readPerPodFile(path string) (netstatus.Write, error) {
	var w netstatus.Write
	data, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(data, &w)
	}
	return w, err
}

// writeFile replaces dir/name with data, atomically, readable by root only.
func writeFile(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, name))
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
	return err
}

// Leftovers lists what the status queue in dir still has to write: the keys of the writes its journal
// queues, and the names of the other files there (per-pod files of the previous version, or an interrupted
// rewrite). It is for tests that check a daemon left nothing behind; it takes no lock, so a line the daemon
// appends meanwhile may be missed.
func Leftovers(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, de := range entries {
		if de.Name() != journalFile {
			out = append(out, de.Name())
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, journalFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	pending := map[string]netstatus.Write{}
	replay(pending, data)
	for k := range pending {
		out = append(out, k)
	}
	return out, nil
}
