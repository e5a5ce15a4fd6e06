package selector

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/braid-cni/braid/sriov-device/internal/discover"
)

// Functions as discovery reports them.
var (
	pfX710 = discover.Device{Address: "0000:3b:00.0", VendorID: "8086", DeviceID: "1572", ClassID: "02",
		Driver: "i40e", Link: discover.Link{Name: "ens1f0", Type: "ether"}, TotalVFs: 64, NumVFs: 4, VFIndex: -1}
	// vf returns VF n of the X710 PF with an iavf netdev.
	vf = func(n int) discover.Device {
		return discover.Device{Address: "0000:3b:02." + string(rune('0'+n)), VendorID: "8086", DeviceID: "154c",
			ClassID: "02", Driver: "iavf", Link: discover.Link{Name: "ens1f0v" + string(rune('0'+n)), Type: "ether"},
			PF: "0000:3b:00.0", VFIndex: n, PFNetdev: "ens1f0", PFLink: discover.Link{Name: "ens1f0", Type: "ether"}}
	}
	vfioVF = discover.Device{Address: "0000:3b:02.3", VendorID: "8086", DeviceID: "154c", ClassID: "02",
		Driver: "vfio-pci", PF: "0000:3b:00.0", VFIndex: 3, PFNetdev: "ens1f0",
		PFLink: discover.Link{Name: "ens1f0", Type: "ether"}}
	ibVF = discover.Device{Address: "0000:5e:00.2", VendorID: "15b3", DeviceID: "101c", ClassID: "02",
		Driver: "mlx5_core", Link: discover.Link{Name: "ib0v0", Type: "infiniband"}, PF: "0000:5e:00.0",
		VFIndex: 0, PFNetdev: "ib0", PFLink: discover.Link{Name: "ib0", Type: "infiniband"}}
	plainNIC = discover.Device{Address: "0000:af:00.0", VendorID: "8086", DeviceID: "1572", ClassID: "02",
		Driver: "i40e", Link: discover.Link{Name: "ens3f0", Type: "ether"}, VFIndex: -1}
	noNetdev = discover.Device{Address: "0000:00:1f.6", VendorID: "8086", DeviceID: "15b8", ClassID: "02",
		VFIndex: -1}
)

func mustPF(t *testing.T, s string) PF {
	t.Helper()
	p, err := ParsePFName(s)
	if err != nil {
		t.Fatalf("ParsePFName(%q): %v", s, err)
	}
	return p
}

func mustRoot(t *testing.T, s string) PF {
	t.Helper()
	p, err := ParseRootDevice(s)
	if err != nil {
		t.Fatalf("ParseRootDevice(%q): %v", s, err)
	}
	return p
}

func TestFilters(t *testing.T) {
	all := []discover.Device{pfX710, vf(0), vf(1), vf(2), vfioVF, ibVF, plainNIC, noNetdev}
	tests := []struct {
		name   string
		filter Filter
		want   []string // addresses that pass, in the order of all
	}{
		{"vendors", Vendors("15b3"), []string{"0000:5e:00.2"}},
		{"vendors any case, several", Vendors("15B3", "8086"), addrs(all...)},
		{"vendors none", Vendors("1af4"), nil},
		{"devices", Devices("154C"), []string{"0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2", "0000:3b:02.3"}},
		{"drivers", Drivers("iavf", "mlx5_core"), []string{"0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2",
			"0000:5e:00.2"}},
		{"drivers vfio-pci", Drivers("vfio-pci"), []string{"0000:3b:02.3"}},
		{"pciAddresses any case", PCIAddresses("0000:3B:02.1", "0000:af:00.0"), []string{"0000:3b:02.1",
			"0000:af:00.0"}},
		{"linkTypes ether: own netdev, and the PF's for a VF without one",
			LinkTypes("ether"), []string{"0000:3b:00.0", "0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2",
				"0000:3b:02.3", "0000:af:00.0"}},
		{"linkTypes infiniband", LinkTypes("infiniband"), []string{"0000:5e:00.2"}},
		{"pfNames: every VF of a PF, never the PF or other functions", PFNames(mustPF(t, "ens1f0")),
			[]string{"0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2", "0000:3b:02.3"}},
		{"pfNames: one index", PFNames(mustPF(t, "ens1f0#2")), []string{"0000:3b:02.2"}},
		{"pfNames: range", PFNames(mustPF(t, "ens1f0#1-2")), []string{"0000:3b:02.1", "0000:3b:02.2"}},
		{"pfNames: range of one", PFNames(mustPF(t, "ens1f0#3-3")), []string{"0000:3b:02.3"}},
		{"pfNames: list of indexes and ranges", PFNames(mustPF(t, "ens1f0#0,2-3")),
			[]string{"0000:3b:02.0", "0000:3b:02.2", "0000:3b:02.3"}},
		{"pfNames: two entries for one PF add up", PFNames(mustPF(t, "ens1f0#0"), mustPF(t, "ens1f0#3")),
			[]string{"0000:3b:02.0", "0000:3b:02.3"}},
		{"pfNames: range beyond the VFs", PFNames(mustPF(t, "ens1f0#3-63")), []string{"0000:3b:02.3"}},
		{"pfNames: a prefix is not a match", PFNames(mustPF(t, "ens1")), nil},
		{"pfNames: regular expression, whole name", PFNames(mustPF(t, "ens[0-9]f0")),
			[]string{"0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2", "0000:3b:02.3"}},
		{"pfNames: regular expression with range", PFNames(mustPF(t, "(ens1f0|ib0)#0")),
			[]string{"0000:3b:02.0", "0000:5e:00.2"}},
		{"pfNames: other PF", PFNames(mustPF(t, "ib0")), []string{"0000:5e:00.2"}},
		{"rootDevices: every VF of a PF", RootDevices(mustRoot(t, "0000:3b:00.0")),
			[]string{"0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2", "0000:3b:02.3"}},
		{"rootDevices: range, any case", RootDevices(mustRoot(t, "0000:3B:00.0#1-2")),
			[]string{"0000:3b:02.1", "0000:3b:02.2"}},
		{"rootDevices: list", RootDevices(mustRoot(t, "0000:3b:00.0#0,3"), mustRoot(t, "0000:5e:00.0#0")),
			[]string{"0000:3b:02.0", "0000:3b:02.3", "0000:5e:00.2"}},
		{"rootDevices: a PF's own address does not select the PF", RootDevices(mustRoot(t, "0000:af:00.0")), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, d := range all {
				if tt.filter(d) {
					got = append(got, d.Address)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("selected (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSetIsTheANDOfItsSelectors(t *testing.T) {
	all := []discover.Device{pfX710, vf(0), vf(1), vfioVF, ibVF, plainNIC}
	tests := []struct {
		name string
		set  Set
		want []string
	}{
		{"empty set selects nothing", Set{}, nil},
		{"needVhostNet alone selects nothing", Set{NeedVhostNet: true}, nil},
		{"vendor and driver", Set{Vendors: []string{"8086"}, Drivers: []string{"iavf"}},
			[]string{"0000:3b:02.0", "0000:3b:02.1"}},
		{"vendor, device, pfName range", Set{Vendors: []string{"8086"}, Devices: []string{"154c"},
			PFNames: []PF{mustPF(t, "ens1f0#1-3")}}, []string{"0000:3b:02.1", "0000:3b:02.3"}},
		{"contradiction", Set{Vendors: []string{"15b3"}, Drivers: []string{"iavf"}}, nil},
		{"link type and root device", Set{LinkTypes: []string{"ether"},
			RootDevices: []PF{mustRoot(t, "0000:3b:00.0#3")}}, []string{"0000:3b:02.3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, d := range all {
				if tt.set.Match(d) {
					got = append(got, d.Address)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("selected (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFirstSetWins(t *testing.T) {
	sets := []Set{{Drivers: []string{"vfio-pci"}}, {Vendors: []string{"8086"}}}
	for _, tt := range []struct {
		d    discover.Device
		want int
	}{{vfioVF, 0}, {vf(0), 1}, {ibVF, -1}} {
		if got := First(sets, tt.d); got != tt.want {
			t.Errorf("First(%s) = %d, want %d", tt.d.Address, got, tt.want)
		}
	}
}

func TestParsePF(t *testing.T) {
	tests := []struct {
		in   string
		want PF
	}{
		{"ens1f0", PF{PF: "ens1f0"}},
		{"ens1f0#3", PF{PF: "ens1f0", VFs: []Range{{3, 3}}}},
		{"ens1f0#0-3", PF{PF: "ens1f0", VFs: []Range{{0, 3}}}},
		{"ens1f0#0,2,5-7", PF{PF: "ens1f0", VFs: []Range{{0, 0}, {2, 2}, {5, 7}}}},
		{"ens1f0#65535", PF{PF: "ens1f0", VFs: []Range{{65535, 65535}}}},
		{"ens.*#1", PF{PF: "ens.*", VFs: []Range{{1, 1}}}},
	}
	for _, tt := range tests {
		got, err := ParsePFName(tt.in)
		if err != nil {
			t.Errorf("ParsePFName(%q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreUnexported(PF{})); diff != "" {
			t.Errorf("ParsePFName(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
	root, err := ParseRootDevice("0000:AF:00.1#0-7")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(PF{PF: "0000:af:00.1", VFs: []Range{{0, 7}}}, root, cmpopts.IgnoreUnexported(PF{})); diff != "" {
		t.Errorf("ParseRootDevice (-want +got):\n%s", diff)
	}
}

func TestParsePFErrors(t *testing.T) {
	tests := []struct {
		in      string
		root    bool
		wantErr string
	}{
		{"", false, "the PF part before # is empty"},
		{"#0-3", false, "the PF part before # is empty"},
		{"ens1f0#", false, "the VF list after # is empty"},
		{"ens1f0#a", false, `VF index "a" is not a number`},
		{"ens1f0#3-1", false, `range "3-1": start 3 is after end 1`},
		{"ens1f0#1-", false, `VF index "" is not a number`},
		{"ens1f0#-1", false, `VF index "" is not a number`},
		{"ens1f0#1--2", false, `VF index "-2" is not a number`},
		{"ens1f0#0,,2", false, `VF index "" is not a number`},
		{"ens1f0# 1", false, `VF index " 1" is not a number`},
		{"ens1f0#65536", false, `VF index "65536" is not a number from 0 to 65535`},
		{"ens1f0#1#2", false, `VF index "1#2" is not a number`},
		{"ens[", false, `"ens[" is not a valid name or regular expression`},
		{"averyveryverylongname", false, "longer than an interface name can be"},
		{"ens1f0", true, `"ens1f0" is not a PCI address`},
		{"3b:00.0#1", true, `"3b:00.0" is not a PCI address`},
		{"0000:3b:20.0", true, `"0000:3b:20.0" is not a PCI address`},
		{"0000:3b:00.0#2-1", true, `start 2 is after end 1`},
	}
	for _, tt := range tests {
		var err error
		if tt.root {
			_, err = ParseRootDevice(tt.in)
		} else {
			_, err = ParsePFName(tt.in)
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("parse(%q) = %v, want an error containing %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestValidPCIAddress(t *testing.T) {
	for s, want := range map[string]bool{
		"0000:3b:02.7": true, "ffff:ff:1f.0": true, "0000:3b:02.8": false, "0000:3b:20.0": false,
		"0000:3B:02.0": false, "3b:02.0": false, "0000:3b:02": false, "0000-3b:02.0": false, "": false,
		"0000:3g:02.0": false,
	} {
		if got := ValidPCIAddress(s); got != want {
			t.Errorf("ValidPCIAddress(%q) = %v, want %v", s, got, want)
		}
	}
}

func addrs(ds ...discover.Device) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Address
	}
	return out
}
