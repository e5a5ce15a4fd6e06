// Command braid-demo is the Go half of deploy/local/demo.sh: it creates and removes the simulated underlay,
// prints the demo pods' interfaces as read inside each pod, and proves the networks work and stay apart.
//
//	braid-demo underlay up|down
//	braid-demo fixture-args    braid-sriov-fixture's flags naming the VFs' netdevs (one per line)
//	braid-demo pods  [flags]   table of every ready pod of -namespace: network, interface, addresses
//	braid-demo prove [flags]   each pod pings its networks' peers; switch counters by network of origin
//
// pods and prove exit 1 when a check fails, saying which.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/braid-cni/braid/deploy/local/demo"
)

const usage = `usage: braid-demo underlay up|down
       braid-demo fixture-args
       braid-demo pods|prove [-kubeconfig FILE] [-crictl BIN] [-crictl-config FILE] [-namespace NS]`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "braid-demo: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	u := demo.Underlay{Nets: demo.Networks, Run: demo.Exec}
	switch args[0] {
	case "underlay":
		if len(args) != 2 {
			return errors.New(usage)
		}
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		switch args[1] {
		case "up":
			return u.Up(ctx)
		case "down":
			return u.Down(ctx)
		}
		return errors.New(usage)
	case "fixture-args":
		for _, a := range demo.FixtureArgs() {
			fmt.Println(a)
		}
		return nil
	case "pods", "prove":
	default:
		return errors.New(usage)
	}

	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "admin kubeconfig of the cluster")
	crictl := fs.String("crictl", "crictl", "crictl binary")
	crictlConfig := fs.String("crictl-config", "/etc/crictl.yaml", "crictl config naming the node's runtime")
	namespace := fs.String("namespace", "braid-demo", "namespace of the pods to show")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	pods, err := inspectAll(ctx, *kubeconfig, demo.Inspector{Run: demo.Exec, Crictl: *crictl, CrictlConfig: *crictlConfig}, *namespace)
	if err != nil {
		return err
	}
	if args[0] == "pods" {
		if err := demo.WritePods(os.Stdout, pods); err != nil {
			return err
		}
		return demo.CheckAddresses(pods)
	}

	pings := demo.Do(ctx, demo.Exec, pods, demo.Pings(pods, demo.Networks))
	fmt.Println("Each pod pings the peer host of each of its networks, from inside the pod, through that network's interface:")
	if err := demo.WritePings(os.Stdout, pings); err != nil {
		return err
	}
	counts, err := u.Counters(ctx)
	if err != nil {
		return err
	}
	fmt.Println()
	fmt.Println("Packets each switch forwarded, by the network of their source address (ebtables counters since the")
	fmt.Println("underlay was made): every network's traffic stays on its own switch.")
	if err := demo.WriteCounts(os.Stdout, counts, demo.Networks); err != nil {
		return err
	}
	mgmtOnData := counts["data"]["mgmt"]
	fmt.Printf("\nManagement packets that crossed the data network: %d\n", mgmtOnData)
	return errors.Join(demo.PingErrors(pings), demo.CheckSeparation(counts, demo.Networks))
}

// inspectAll reads every ready pod of the namespace, by name.
func inspectAll(ctx context.Context, kubeconfig string, in demo.Inspector, namespace string) ([]demo.Pod, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	list, err := c.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods in %s: %w", namespace, err)
	}
	items := slices.DeleteFunc(list.Items, func(p corev1.Pod) bool { return p.DeletionTimestamp != nil || !demo.PodReady(&p) })
	slices.SortFunc(items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	if len(items) == 0 {
		return nil, fmt.Errorf("no ready pod in namespace %s", namespace)
	}
	var out []demo.Pod
	for i := range items {
		p, err := in.Inspect(ctx, &items[i])
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
