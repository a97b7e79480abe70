//go:build tools

// Package kubelet pins upstream's kubelet at the control plane's release (see build.sh: the
// k8s.io/kubernetes version here must equal the one in ../../k8s-binaries/go.mod).
package kubelet

import (
	_ "k8s.io/kubernetes/cmd/kubelet"
)
