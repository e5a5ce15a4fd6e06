package device

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

func TestAssign(t *testing.T) {
	alloc := map[string][]string{"example.com/sriov_a": {"0000:18:02.1", "0000:18:02.2"}, "example.com/sriov_b": {"0000:19:00.1"}}
	got, err := Assign([]Request{
		{Network: "ns/a1", Resource: "example.com/sriov_a"},
		{Network: "ns/plain"},
		{Network: "ns/b", Resource: "example.com/sriov_b"},
		{Network: "ns/a2", Resource: "example.com/sriov_a"},
	}, alloc)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"0000:18:02.1", "", "0000:19:00.1", "0000:18:02.2"}, got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}

	got, err = Assign([]Request{{Network: "ns/a1", Resource: "example.com/sriov_a"}, {Network: "ns/a2", Resource: "example.com/sriov_a", Fixed: "0000:18:02.1"}}, alloc)
	if err != nil || !cmp.Equal(got, []string{"0000:18:02.2", "0000:18:02.1"}) {
		t.Fatalf("a device the pod asked for was given to another network: %v %v", got, err)
	}

	_, err = Assign([]Request{{Network: "ns/a1", Resource: "example.com/sriov_a"}, {Network: "ns/a2", Resource: "example.com/sriov_a"},
		{Network: "ns/a3", Resource: "example.com/sriov_a"}}, alloc)
	if !errors.Is(err, ErrNoDevice) {
		t.Fatalf("three networks on two devices: err = %v, want ErrNoDevice", err)
	}
	if _, err := Assign([]Request{{Network: "ns/x", Resource: "example.com/none"}}, alloc); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("unallocated resource: err = %v", err)
	}
}

type fakeKubelet struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	resp *podresourcesv1.ListPodResourcesResponse
}

func (f *fakeKubelet) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	return f.resp, nil
}

// ServeFake starts a PodResources server built from the kubelet's own API types on a unix socket in dir.
func serveFake(t *testing.T, resp *podresourcesv1.ListPodResourcesResponse) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(srv, &fakeKubelet{resp: resp})
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return sock
}

func TestClientDevices(t *testing.T) {
	sock := serveFake(t, &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{
		{Name: "other", Namespace: "app", Containers: []*podresourcesv1.ContainerResources{{Name: "c", Devices: []*podresourcesv1.ContainerDevices{
			{ResourceName: "example.com/sriov_a", DeviceIds: []string{"0000:18:02.7"}}}}}},
		{Name: "web", Namespace: "app", Containers: []*podresourcesv1.ContainerResources{
			{Name: "c1", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "example.com/sriov_a", DeviceIds: []string{"0000:18:02.1"}}}},
			{Name: "c2", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "example.com/sriov_a", DeviceIds: []string{"0000:18:02.2"}},
				{ResourceName: "example.com/sriov_b", DeviceIds: []string{"0000:19:00.1"}}}},
		}},
	}})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got, err := Client{Socket: sock}.Devices(ctx, "app", "web")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"example.com/sriov_a": {"0000:18:02.1", "0000:18:02.2"}, "example.com/sriov_b": {"0000:19:00.1"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if _, err := (Client{Socket: filepath.Join(t.TempDir(), "none.sock")}).Devices(ctx, "app", "web"); err == nil {
		t.Fatal("no error from a socket nobody listens on")
	}
}

func TestDeviceInfoFiles(t *testing.T) {
	f := Files{Dir: t.TempDir()}
	cniPath := f.CNIPath("sriov-a", "c0ffee", "net1")
	if ok, err := f.Copy("example.com/sriov_a", "0000:18:02.1", cniPath); ok || err != nil {
		t.Fatalf("Copy without a device plugin file = %v, %v; want false, nil", ok, err)
	}
	dp := filepath.Join(f.Dir, "dp", "example.com-sriov_a-0000:18:02.1-device.json")
	if err := os.MkdirAll(filepath.Dir(dp), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dp, []byte(`{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:18:02.1","pf-pci-address":"0000:18:00.0"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if ok, err := f.Copy("example.com/sriov_a", "0000:18:02.1", cniPath); !ok || err != nil {
		t.Fatalf("Copy = %v, %v", ok, err)
	}
	di, err := f.Load(cniPath)
	if err != nil || di == nil || di.Pci == nil || di.Pci.PfPciAddress != "0000:18:00.0" {
		t.Fatalf("Load = %+v, %v", di, err)
	}
	if err := f.Remove(cniPath); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove(cniPath); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if di, err := f.Load(cniPath); di != nil || err != nil {
		t.Fatalf("Load after Remove = %v, %v", di, err)
	}
}
