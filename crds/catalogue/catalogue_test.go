package catalogue

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/braid-cni/braid/crds/testenv"
)

func TestParse(t *testing.T) {
	doc := strings.Join([]string{
		"# title",
		"| Prefix | Package |", // another table: ignored
		"|---|---|",
		"| ANN | x |",
		"",
		"| ID | Input | Where | Message |",
		"|---|:---|---|---|",
		"| ANN-01 | `a\\|b` | braid CNI ADD error code 100, Event BraidAddFailed on the pod | `networks: x` then `y` |",
		"| POOL-ST-02 | `ranges` | IPPool condition Ready=False reason InvalidSpec | `spec.ranges[1]: overlaps` |",
		"",
		"text between tables",
		"| ID | Input | Where | Message |",
		"|---|---|---|---|",
		"| FIP-07 | `ip: 192.0.2.11` | kubectl edit rejected (Invalid) | `ip is immutable` |",
	}, "\n")
	rows, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	type summary struct {
		ID, Prefix       string
		Inputs, Messages []string
		Code             int
		Reason, Cond     string
		Line             int
	}
	var got []summary
	for _, r := range rows {
		got = append(got, summary{r.ID, r.Prefix, r.Inputs(), r.Messages(), r.Code(), r.Reason(), r.Condition(), r.Line})
	}
	want := []summary{
		{"ANN-01", "ANN", []string{"a|b"}, []string{"networks: x", "y"}, 100, "BraidAddFailed", "", 8},
		{"POOL-ST-02", "POOL-ST", []string{"ranges"}, []string{"spec.ranges[1]: overlaps"}, 0, "InvalidSpec", "Ready=False", 9},
		{"FIP-07", "FIP", []string{"ip: 192.0.2.11"}, []string{"ip is immutable"}, 0, "Invalid", "", 14},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("rows (-want +got):\n%s", diff)
	}
	if !rows[0].Found("add: networks: x; y") || rows[0].Found("add: networks: x") {
		t.Error("Found must want every message")
	}
	if !rows[2].Found("FloatingIP <ns>: ip is immutable") {
		t.Error("Found must find the message")
	}
}

func TestParseRefusesMalformedRows(t *testing.T) {
	head := "| ID | Input | Where | Message |\n|---|---|---|---|\n"
	for _, tc := range []struct{ name, rows, says string }{
		{"bad ID", "| ann-1 | `x` | w | `m` |", `ID "ann-1" is not PREFIX-NN`},
		{"duplicate ID", "| ANN-01 | `x` | w | `m` |\n| ANN-01 | `y` | w | `m` |", "ANN-01 is already used on line 3"},
		{"no message in backticks", "| ANN-01 | `x` | w | m |", "ANN-01 needs where the user sees it and the message in backticks"},
		{"no where", "| ANN-01 | `x` |  | `m` |", "ANN-01 needs where"},
		{"unescaped pipe", "| ANN-01 | `a|b` | w | `m` |", "5 cells, want 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(head + tc.rows)
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Parse = %v, want an error saying %q", err, tc.says)
			}
		})
	}
}

// TestEveryPrefixIsOwned reads the real catalogue: every row's prefix has an owner in Owners, every owner
// package exists and has a test that runs the catalogue with that prefix, and every owned prefix has rows.
func TestEveryPrefixIsOwned(t *testing.T) {
	rows, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 36 {
		t.Errorf("%s has %d rows; the Hardening issue asks for at least 36", File, len(rows))
	}
	count := map[string]int{}
	for _, r := range rows {
		if _, ok := Owners[r.Prefix]; !ok {
			t.Errorf("%s (%s:%d): prefix %s has no owner: add it to catalogue.Owners with the package whose test proves it",
				r.ID, File, r.Line, r.Prefix)
		}
		count[r.Prefix]++
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, File))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Owners, ownersTable(string(doc))); diff != "" {
		t.Errorf("the Prefix | Proven by table of %s differs from catalogue.Owners (-Owners +table):\n%s", File, diff)
	}
	for prefix, pkg := range Owners {
		if count[prefix] == 0 {
			t.Errorf("prefix %s (owned by %s) has no row in %s", prefix, pkg, File)
		}
		if !runsPrefix(t, filepath.Join(root, pkg), prefix) {
			t.Errorf("no test in %s calls catalogue.Run with prefix %q", pkg, prefix)
		}
	}
}

// ownersTable reads the document's "| Prefix | Proven by ... |" table: "| ANN, NAD | meta-plugin/internal/plugin |".
func ownersTable(doc string) map[string]string {
	out := map[string]string{}
	inTable := false
	for _, line := range strings.Split(doc, "\n") {
		cells := splitRow(strings.TrimSpace(line))
		switch {
		case !strings.HasPrefix(line, "|"):
			inTable = false
		case len(cells) == 2 && cells[0] == "Prefix":
			inTable = true
		case inTable && len(cells) == 2 && !isSeparator(cells):
			for _, p := range strings.Split(cells[0], ",") {
				out[strings.TrimSpace(p)] = cells[1]
			}
		}
	}
	return out
}

// runsPrefix reports whether a test file of dir calls catalogue.Run and names the prefix as a string.
func runsPrefix(t *testing.T, dir, prefix string) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	quoted := regexp.MustCompile(`"` + regexp.QuoteMeta(prefix) + `"`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "catalogue.Run(") && quoted.Match(b) {
			return true
		}
	}
	return false
}
