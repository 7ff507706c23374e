package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
)

// kubeletBinary is the virtual-kubelet node, built as its own module
// (kubelet/, `make kubelet`) so that client-go and virtual-kubelet never
// enter banger's own build.
const kubeletBinary = "banger-kubelet"

func newKubeletCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "kubelet --kubeconfig FILE [--node-name NAME] [flags]",
		Short: "Join this host to a Kubernetes cluster: pods scheduled to it become microVMs",
		Long: `Runs banger-kubelet, a virtual-kubelet node backed by this host's banger
daemon (its socket: --socket or BANGER_SOCKET). Pods that tolerate the
taint banger.dev/microvm=true:NoSchedule and are scheduled to the node run
as one VM each. banger-kubelet --help lists its flags; docs/kubernetes.md
says how to join a host, which pod fields are supported, and the security
model.`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := findKubelet()
			if err != nil {
				return err
			}
			argv := append([]string{path}, args...)
			return syscall.Exec(path, argv, os.Environ())
		},
	}
}

// findKubelet looks beside the banger binary first, then on PATH.
func findKubelet() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), kubeletBinary)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath(kubeletBinary); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s was not found beside banger or on PATH: build it with `make kubelet` (it is a separate module, kubelet/) and install it next to banger", kubeletBinary)
}
