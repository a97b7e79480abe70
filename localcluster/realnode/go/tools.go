//go:build tools

// Package realnode pins the upstream node components that the local cluster's real nodes run:
// containerd (daemon, runc shim, ctr) and the CNI reference plugins. Nothing here is our code;
// build.sh builds these main packages with -mod=readonly at the versions in go.mod.
package realnode

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
)
