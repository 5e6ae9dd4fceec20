// Command kube is every Kubernetes program the project's one-node cluster runs, in one binary
// (scripts/cluster.sh), and etcd at the version this Kubernetes release requires. It dispatches on the name it was started as, so a symlink named
// kube-apiserver runs the API server, or on its first argument (`kube kubectl get pods`).
//
// Why one binary: the components share nearly all of their packages, so linking them once saves
// minutes of a cold build on two cores and hundreds of megabytes of cache, and the running
// processes share one executable's pages. Each entry below is exactly what the component's own
// cmd/<name>/<name>.go main does at this release (upstream's hyperkube did the same until 1.17).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	_ "time/tzdata" // CronJob time zones (kube-apiserver, kube-controller-manager)

	"go.etcd.io/etcd/server/v3/etcdmain"

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric

	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl's client auth plugins
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"

	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubeadm "k8s.io/kubernetes/cmd/kubeadm/app"
	kubeadmerrors "k8s.io/kubernetes/cmd/kubeadm/app/util/errors"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

var programs = map[string]func(){
	"kube-apiserver":          func() { os.Exit(cli.Run(apiserver.NewAPIServerCommand())) },
	"kube-controller-manager": func() { os.Exit(cli.Run(controllermanager.NewControllerManagerCommand())) },
	"kube-scheduler":          func() { os.Exit(cli.Run(scheduler.NewSchedulerCommand())) },
	"kube-proxy":              func() { os.Exit(cli.Run(proxy.NewProxyCommand())) },
	"kubelet":                 func() { os.Exit(cli.Run(kubelet.NewKubeletCommand(context.Background()))) },
	"kubeadm":                 func() { kubeadmerrors.HandleError(kubeadm.Run()) },
	// k8s.io/kubernetes requires go.etcd.io/etcd/server/v3 (its tests embed it), so the etcd linked here is the
	// release this Kubernetes is tested with; Debian bookworm's etcd 3.4 is older than kubeadm's minimum (3.5.24).
	"etcd": func() { etcdmain.Main(os.Args) },
	"kubectl": func() {
		// As cmd/kubectl: the verbosity is needed before the command (plugins, .kuberc) is built.
		logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) // nolint:errcheck
		if err := cli.RunNoErrOutput(kubectlcmd.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
	},
}

func main() {
	if run, ok := programs[filepath.Base(os.Args[0])]; ok {
		run()
		return
	}
	// `kube <program> args...`: the program sees itself as argv[0], as if started through its link.
	if len(os.Args) > 1 {
		if run, ok := programs[os.Args[1]]; ok {
			os.Args = os.Args[1:]
			run()
			return
		}
	}
	names := make([]string, 0, len(programs))
	for name := range programs {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: %s <program> [args...], or start it through a link named after the program\nprograms: %s\n",
		filepath.Base(os.Args[0]), strings.Join(names, " "))
	os.Exit(2)
}
