//go:build tools

// Package controlplane pins the upstream commands that the local cluster runs.
//
// Nothing here is our code: the binaries are upstream's own main packages, built
// from the k8s.io/kubernetes module (and etcd's) at the release pinned in go.mod,
// so the local cluster runs the same API server, controllers and scheduler as a
// real cluster of that release.
package controlplane

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
