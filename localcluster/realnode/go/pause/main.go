// Command pause is the local cluster's pod sandbox ("pause") process: it holds the pod's
// namespaces, reaps zombies it inherits, and exits on SIGINT/SIGTERM, like upstream's
// pause.c (build/pause/linux/pause.c of kubernetes). No image can be pulled from outside
// here, so the real nodes' sandbox image is built from this static binary and pushed to
// the local registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if os.Getpid() != 1 {
		os.Stderr.WriteString("Warning: pause should be the first process\n")
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		switch sig {
		case syscall.SIGCHLD:
			for {
				var status syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		default:
			os.Exit(0)
		}
	}
}
