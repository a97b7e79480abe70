//go:build tools

// Pins kind's CLI (a main package) at the version go.mod requires, so that build-kind.sh builds
// it with -mod=readonly from this module's go.sum.
package main

import _ "sigs.k8s.io/kind"
