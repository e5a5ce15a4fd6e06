package device

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// maxMsgSize matches the kubelet's limit for PodResources answers, which list every pod of the node.
const maxMsgSize = 16 << 20

// Client asks the kubelet's PodResources API which devices a pod holds.
type Client struct {
	// Socket is the kubelet's pod-resources unix socket.
	Socket string
}

// Devices returns, per resource name, the device IDs the kubelet allocated to the pod's containers, in the
// order the kubelet lists them.
func (c Client) Devices(ctx context.Context, namespace, name string) (map[string][]string, error) {
	conn, err := grpc.NewClient("unix://"+c.Socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize)))
	if err != nil {
		return nil, fmt.Errorf("kubelet pod resources at %s: %w", c.Socket, err)
	}
	defer func() { _ = conn.Close() }() // nothing to report: the answer is already read
	resp, err := podresourcesv1.NewPodResourcesListerClient(conn).List(ctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		return nil, fmt.Errorf("kubelet pod resources at %s: list: %w", c.Socket, err)
	}
	out := map[string][]string{}
	for _, p := range resp.GetPodResources() {
		if p.GetNamespace() != namespace || p.GetName() != name {
			continue
		}
		for _, ctr := range p.GetContainers() {
			for _, d := range ctr.GetDevices() {
				out[d.GetResourceName()] = append(out[d.GetResourceName()], d.GetDeviceIds()...)
			}
		}
	}
	return out, nil
}
