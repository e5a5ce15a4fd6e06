package testenv

import "testing"

func TestParseCPULine(t *testing.T) {
	steal, total, err := parseCPULine("cpu  3747286 6809 1028558 9297068 50669 0 74290 330831 17 0\n")
	if err != nil || steal != 330831 || total != 3747286+6809+1028558+9297068+50669+0+74290+330831 {
		t.Fatalf("got steal %d total %d err %v", steal, total, err)
	}
	for _, bad := range []string{"", "cpu0 1 2 3 4 5 6 7 8", "cpu 1 2 3", "cpu 1 2 3 4 5 6 7 x"} {
		if _, _, err := parseCPULine(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if p := StartSteal().Percent(); p < -1 || p > 100 {
		t.Fatalf("steal %.1f%% is no percentage", p)
	}
}
