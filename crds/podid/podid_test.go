package podid

import "testing"

func TestIs(t *testing.T) {
	const static = "5a4c0e6f1b2d3c4e5f60718293a4b5c6" // the kubelet's hash of a static pod's manifest
	for _, tc := range []struct {
		name        string
		uid         string
		annotations map[string]string
		runtime     string
		want        bool
	}{
		{"same UID", "u1", nil, "u1", true},
		{"other UID", "u1", nil, "u2", false},
		{"runtime sends none", "u1", nil, "", true},
		{"mirror of the static pod", "api-uid", map[string]string{MirrorAnnotation: static}, static, true},
		{"mirror asked by its API UID", "api-uid", map[string]string{MirrorAnnotation: static}, "api-uid", true},
		{"mirror of another static pod", "api-uid", map[string]string{MirrorAnnotation: static}, "other", false},
		{"empty mirror annotation", "api-uid", map[string]string{MirrorAnnotation: ""}, "other", false},
		{"empty mirror annotation, runtime sends none", "api-uid", map[string]string{MirrorAnnotation: ""}, "", true},
		{"hash annotation alone is no mirror", "api-uid", map[string]string{"kubernetes.io/config.hash": static}, static, false},
	} {
		if got := Is(tc.uid, tc.annotations, tc.runtime); got != tc.want {
			t.Errorf("%s: Is(%q, %v, %q) = %v, want %v", tc.name, tc.uid, tc.annotations, tc.runtime, got, tc.want)
		}
	}
}
