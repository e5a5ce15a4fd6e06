// Package catalogue reads testdata/bad-input.md, the table of bad inputs and the exact errors users see for
// them, for the tests that prove every row. Each component's catalogue test runs one case per row of its ID
// prefixes (Run) and checks the documented message against the error it produced (Row.Expect), so the
// document cannot drift from the code.
//
// It lives under crds/, next to testenv, because like testenv it is a test harness every component shares; a
// package under testdata/ would be skipped by `go test ./...`, and with it this package's own test.
package catalogue

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/braid-cni/braid/crds/testenv"
)

// File is the catalogue's path inside the repository.
const File = "testdata/bad-input.md"

// Owners maps every ID prefix to the package whose catalogue test proves its rows.
var Owners = map[string]string{
	"ANN":     "meta-plugin/internal/plugin",
	"NAD":     "meta-plugin/internal/plugin",
	"CONF":    "meta-plugin/internal/plugin",
	"IPAM":    "ipam-server/internal/plugin",
	"ANN-EV":  "ipam-server/internal/server",
	"NAD-EV":  "ipam-server/internal/server",
	"POOL-ST": "ipam-server/internal/server",
	"POOL":    "crds/v1alpha1",
	"FIP":     "crds/v1alpha1",
	"SRIOV":   "sriov-device/cmd/braid-sriov-dp",
}

// Row is one bad input of the catalogue.
type Row struct {
	// ID is e.g. "ANN-01"; Prefix is the ID without its number, e.g. "ANN".
	ID, Prefix string
	// Input, Where and Message are the cells as written (escaped pipes unescaped).
	Input, Where, Message string
	// Line is the row's line in the file, for messages.
	Line int
}

var (
	idPattern   = regexp.MustCompile(`^([A-Z]+(?:-[A-Z]+)?)-(\d{2})$`)
	codeSpan    = regexp.MustCompile("`([^`]+)`")
	codePattern = regexp.MustCompile(`\bcode (\d+)`)
	reasonIn    = regexp.MustCompile(`(?:\bEvent |\breason |rejected \()(\w+)`)
	conditionIn = regexp.MustCompile(`\bcondition (\w+=\w+)`)
	header      = []string{"ID", "Input", "Where", "Message"}
)

// Messages are the code spans of the Message cell: each must appear verbatim in the error.
func (r Row) Messages() []string { return spans(r.Message) }

// Inputs are the code spans of the Input cell: each must appear in the input the test really uses.
func (r Row) Inputs() []string { return spans(r.Input) }

// Code is the number after "code " in Where (a CNI error code or an exit code), or 0 when Where names none.
func (r Row) Code() int {
	m := codePattern.FindStringSubmatch(r.Where)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// Reason is the reason Where names: "Event <Reason>", "reason <Reason>" or "rejected (<Reason>)"; "" when none.
func (r Row) Reason() string {
	m := reasonIn.FindStringSubmatch(r.Where)
	if m == nil {
		return ""
	}
	return m[1]
}

// Condition is the condition Where names as "condition <Type>=<Status>", e.g. "Ready=False"; "" when none.
func (r Row) Condition() string {
	m := conditionIn.FindStringSubmatch(r.Where)
	if m == nil {
		return ""
	}
	return m[1]
}

// Found reports whether every documented message appears verbatim in got. Placeholders in the document, such
// as <ns> for the test's namespace, are replaced first: pass them as old, new pairs.
func (r Row) Found(got string, placeholders ...string) bool {
	repl := strings.NewReplacer(placeholders...)
	for _, m := range r.Messages() {
		if !strings.Contains(got, repl.Replace(m)) {
			return false
		}
	}
	return true
}

// Expect fails the test unless every documented message appears verbatim in got (see Found).
func (r Row) Expect(t testing.TB, got string, placeholders ...string) {
	t.Helper()
	repl := strings.NewReplacer(placeholders...)
	for _, m := range r.Messages() {
		if want := repl.Replace(m); !strings.Contains(got, want) {
			t.Errorf("%s (%s:%d): the documented message\n\t%s\ndoes not appear in what the user sees:\n\t%s",
				r.ID, File, r.Line, want, got)
		}
	}
}

// ExpectInput fails the test unless every code span of the Input cell appears in the input the test really
// used, white space aside, so that the document shows the input that produces the message.
func (r Row) ExpectInput(t testing.TB, used string) {
	t.Helper()
	squeeze := func(s string) string { return strings.Join(strings.Fields(s), "") }
	for _, in := range r.Inputs() {
		if !strings.Contains(squeeze(used), squeeze(in)) {
			t.Errorf("%s (%s:%d): the documented input %s is not in the input the test uses:\n\t%s", r.ID, File, r.Line, in, used)
		}
	}
}

func spans(cell string) []string {
	var out []string
	for _, m := range codeSpan.FindAllStringSubmatch(cell, -1) {
		out = append(out, m[1])
	}
	return out
}

// Parse reads the rows of every table of doc whose header is | ID | Input | Where | Message |. It refuses a
// malformed ID, a duplicate ID, a row of the wrong width, and a row without a message in backticks.
func Parse(doc string) ([]Row, error) {
	var rows []Row
	var errs []error
	seen := map[string]int{}
	inTable := false
	for i, line := range strings.Split(doc, "\n") {
		n := i + 1
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := splitRow(line)
		switch {
		case slices.Equal(cells, header):
			inTable = true
			continue
		case !inTable || isSeparator(cells):
			continue
		case len(cells) != len(header):
			errs = append(errs, fmt.Errorf("line %d: %d cells, want %d (%s); escape a | inside a cell as \\|",
				n, len(cells), len(header), strings.Join(header, ", ")))
			continue
		}
		r := Row{ID: cells[0], Input: cells[1], Where: cells[2], Message: cells[3], Line: n}
		m := idPattern.FindStringSubmatch(r.ID)
		if m == nil {
			errs = append(errs, fmt.Errorf("line %d: ID %q is not PREFIX-NN, e.g. ANN-01 or POOL-ST-02", n, r.ID))
			continue
		}
		r.Prefix = m[1]
		if prev, dup := seen[r.ID]; dup {
			errs = append(errs, fmt.Errorf("line %d: ID %s is already used on line %d", n, r.ID, prev))
			continue
		}
		seen[r.ID] = n
		if len(r.Messages()) == 0 || r.Where == "" {
			errs = append(errs, fmt.Errorf("line %d: %s needs where the user sees it and the message in backticks", n, r.ID))
			continue
		}
		rows = append(rows, r)
	}
	return rows, errors.Join(errs...)
}

// splitRow splits "| a | b \| c |" into its trimmed cells, "\|" standing for a | inside a cell.
func splitRow(line string) []string {
	line = strings.TrimSuffix(strings.TrimPrefix(line, "|"), "|")
	var cells []string
	var cell strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cell.WriteByte('|')
			i++
		case line[i] == '|':
			cells = append(cells, strings.TrimSpace(cell.String()))
			cell.Reset()
		default:
			cell.WriteByte(line[i])
		}
	}
	return append(cells, strings.TrimSpace(cell.String()))
}

func isSeparator(cells []string) bool {
	for _, c := range cells {
		if strings.Trim(c, ":-") != "" || c == "" {
			return false
		}
	}
	return true
}

// Load reads and parses the catalogue of the checkout the test runs in.
func Load() ([]Row, error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(root, File))
	if err != nil {
		return nil, fmt.Errorf("catalogue: %w", err)
	}
	rows, err := Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("catalogue %s: %w", File, err)
	}
	return rows, nil
}

// Run runs run as one subtest per catalogue row of the given prefixes, named by the row's ID, with the case
// of that ID. A row without a case and a case without a row fail the test, and so does a prefix that is not
// in Owners or has no rows.
func Run[C any](t *testing.T, cases map[string]C, run func(t *testing.T, row Row, c C), prefixes ...string) {
	t.Helper()
	all, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	var rows []Row
	for _, p := range prefixes {
		if _, ok := Owners[p]; !ok {
			t.Fatalf("prefix %s is not in catalogue.Owners: add it there with the package that proves it", p)
		}
		n := len(rows)
		for _, r := range all {
			if r.Prefix == p {
				rows = append(rows, r)
			}
		}
		if len(rows) == n {
			t.Errorf("%s has no row with prefix %s", File, p)
		}
	}
	ids := map[string]bool{}
	for _, r := range rows {
		ids[r.ID] = true
		if _, ok := cases[r.ID]; !ok {
			t.Errorf("%s (%s:%d) has no case in %s: add one that produces its error", r.ID, File, r.Line, t.Name())
		}
	}
	for id := range cases {
		if !ids[id] {
			t.Errorf("case %s of %s has no row in %s (prefixes %v): document it or remove the case", id, t.Name(), File, prefixes)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, r := range rows {
		t.Run(r.ID, func(t *testing.T) { run(t, r, cases[r.ID]) })
	}
}
