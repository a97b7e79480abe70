// Command validate checks kind-config/cluster.yaml with kind's own code, without a container engine:
//
//  1. kind's config loader (strict decoding of kind.x-k8s.io/v1alpha4, defaulting, conversion) and
//     kind's Validate: what `kind create cluster --config` runs before it creates anything;
//  2. the kubeadm configuration kind generates for every node from it (kind's template for the given
//     Kubernetes version, then the file's kubeadmConfigPatches), checked for the checkpoint feature
//     gate, the subnets and failCgroupV1;
//  3. the containerd configuration kind writes on every node (the file's containerdConfigPatches
//     applied by kind's patcher to kind's base config.toml), checked for CRIU restore and the
//     registry hosts directory;
//  4. no address range is private (10/8, 172.16/12, 192.168/16): pods, Services, the node network.
//
// kind's loader, validator and generators are internal packages; Go lets a package import them when
// its import path is under sigs.k8s.io/kind/pkg/cluster, so this module's path is (go.mod). Nothing of
// kind is copied: the code that runs is the code of the kind version go.mod pins.
//
// Usage: validate -config cluster.yaml -containerd-base config.toml [-out DIR] [-node-subnet CIDR]
// Exit status 0 when every check passes; otherwise every failure is printed and the status is 1.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"

	toml "github.com/pelletier/go-toml"
	yaml "go.yaml.in/yaml/v3"

	"sigs.k8s.io/kind/pkg/cluster/constants"
	"sigs.k8s.io/kind/pkg/cluster/internal/kubeadm"
	"sigs.k8s.io/kind/pkg/cluster/internal/providers/common"
	"sigs.k8s.io/kind/pkg/internal/apis/config"
	"sigs.k8s.io/kind/pkg/internal/apis/config/encoding"
	"sigs.k8s.io/kind/pkg/internal/patch"
)

// The ranges no podmigrate configuration may use (RFC 1918).
var privateRanges = mustCIDRs("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")

func mustCIDRs(cidrs ...string) []*net.IPNet {
	out := make([]*net.IPNet, 0, len(cidrs))
	for _, c := range cidrs {
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			panic(err)
		}
		out = append(out, n)
	}
	return out
}

// overlaps reports whether two networks share any address.
func overlaps(a, b *net.IPNet) bool {
	return a.Contains(b.IP) || b.Contains(a.IP)
}

type checker struct{ failures []string }

func (c *checker) fail(format string, args ...any) {
	c.failures = append(c.failures, fmt.Sprintf(format, args...))
}

// nonPrivate checks every CIDR of a comma-separated list.
func (c *checker) nonPrivate(what, cidrs string) {
	for _, s := range strings.Split(cidrs, ",") {
		s = strings.TrimSpace(s)
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			c.fail("%s: %q is not a CIDR: %v", what, s, err)
			continue
		}
		for _, p := range privateRanges {
			if overlaps(n, p) {
				c.fail("%s %s overlaps the private range %s", what, s, p)
			}
		}
	}
}

// nodeNames are the node names kind gives the config's nodes (kind's own namer).
func nodeNames(cfg *config.Cluster) []string {
	namer := common.MakeNodeNamer(cfg.Name)
	names := make([]string, 0, len(cfg.Nodes))
	for _, n := range cfg.Nodes {
		names = append(names, namer(string(n.Role)))
	}
	return names
}

// kubeadmConfig is what kind's config action writes to /kind/kubeadm.conf on a node: kind's
// template for the Kubernetes version, the cluster's patches, then the node's own.
func kubeadmConfig(cfg *config.Cluster, node config.Node, name, address, k8sVersion string) (string, error) {
	controlPlane := kubeadm.ConfigData{
		ClusterName:          cfg.Name,
		KubernetesVersion:    k8sVersion,
		ControlPlaneEndpoint: fmt.Sprintf("%s:%d", cfg.Name+"-control-plane", common.APIServerInternalPort),
		APIBindPort:          common.APIServerInternalPort,
		APIServerAddress:     cfg.Networking.APIServerAddress,
		NodeProvider:         "docker",
		ControlPlane:         node.Role == config.ControlPlaneRole,
		NodeAddress:          address,
		NodeName:             name,
		Token:                kubeadm.Token,
		KubeProxyMode:        string(cfg.Networking.KubeProxyMode),
		PodSubnet:            cfg.Networking.PodSubnet,
		ServiceSubnet:        cfg.Networking.ServiceSubnet,
		FeatureGates:         cfg.FeatureGates,
		RuntimeConfig:        cfg.RuntimeConfig,
		IPFamily:             cfg.Networking.IPFamily,
	}
	generated, err := kubeadm.Config(controlPlane)
	if err != nil {
		return "", err
	}
	patched, err := patch.KubeYAML(generated, cfg.KubeadmConfigPatches, cfg.KubeadmConfigPatchesJSON6902)
	if err != nil {
		return "", err
	}
	if len(node.KubeadmConfigPatches) > 0 || len(node.KubeadmConfigPatchesJSON6902) > 0 {
		if patched, err = patch.KubeYAML(patched, node.KubeadmConfigPatches, node.KubeadmConfigPatchesJSON6902); err != nil {
			return "", err
		}
	}
	// As kind does before writing it (kubeadm refuses the name it matched patches with).
	return strings.ReplaceAll(patched, "metadata:\n  name: config\n", ""), nil
}

// documents splits a YAML stream into documents keyed by kind.
func documents(stream string) (map[string]map[string]any, error) {
	out := map[string]map[string]any{}
	dec := yaml.NewDecoder(strings.NewReader(stream))
	for {
		doc := map[string]any{}
		if err := dec.Decode(&doc); err != nil {
			if err.Error() == "EOF" {
				return out, nil
			}
			return nil, err
		}
		if kind, ok := doc["kind"].(string); ok {
			out[kind] = doc
		}
	}
}

// lookup walks nested maps by key.
func lookup(doc map[string]any, keys ...string) (any, bool) {
	var cur any = doc
	for _, k := range keys {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// extraArg finds a kubeadm v1beta4 extraArgs entry (a list of {name, value}) of a control-plane component.
func extraArg(doc map[string]any, component, name string) (string, bool) {
	args, ok := lookup(doc, component, "extraArgs")
	if !ok {
		return "", false
	}
	list, ok := args.([]any)
	if !ok {
		return "", false
	}
	for _, a := range list {
		if m, ok := a.(map[string]any); ok && m["name"] == name {
			v, _ := m["value"].(string)
			return v, true
		}
	}
	return "", false
}

func (c *checker) checkKubeadm(node, rendered string, cfg *config.Cluster) {
	docs, err := documents(rendered)
	if err != nil {
		c.fail("%s: kubeadm config is not YAML: %v", node, err)
		return
	}
	kubelet, ok := docs["KubeletConfiguration"]
	if !ok {
		c.fail("%s: no KubeletConfiguration in the kubeadm config", node)
		return
	}
	if v, _ := lookup(kubelet, "featureGates", "ContainerCheckpoint"); v != true {
		c.fail("%s: kubelet featureGates.ContainerCheckpoint is %v, want true", node, v)
	}
	if v, _ := lookup(kubelet, "serverTLSBootstrap"); v != true {
		c.fail("%s: kubelet serverTLSBootstrap is %v, want true (the agent verifies the kubelet with the cluster CA)", node, v)
	}
	if v, ok := lookup(kubelet, "failCgroupV1"); !ok || v != false {
		c.fail("%s: kubelet failCgroupV1 is %v (set: %v), want false (the patch did not apply)", node, v, ok)
	}
	clusterCfg, ok := docs["ClusterConfiguration"]
	if !ok {
		c.fail("%s: no ClusterConfiguration in the kubeadm config", node)
		return
	}
	if v, _ := lookup(clusterCfg, "networking", "podSubnet"); v != cfg.Networking.PodSubnet {
		c.fail("%s: kubeadm networking.podSubnet is %v, want %s", node, v, cfg.Networking.PodSubnet)
	}
	if v, _ := lookup(clusterCfg, "networking", "serviceSubnet"); v != cfg.Networking.ServiceSubnet {
		c.fail("%s: kubeadm networking.serviceSubnet is %v, want %s", node, v, cfg.Networking.ServiceSubnet)
	}
	for _, component := range []string{"apiServer", "controllerManager", "scheduler"} {
		gates, _ := extraArg(clusterCfg, component, "feature-gates")
		if !strings.Contains(","+gates+",", ",ContainerCheckpoint=true,") {
			c.fail("%s: %s feature-gates %q lack ContainerCheckpoint=true", node, component, gates)
		}
	}
}

// checkContainerd applies the config's containerd patches to kind's base config.toml as kind does.
func (c *checker) checkContainerd(base string, cfg *config.Cluster) string {
	patched, err := patch.ContainerdTOML(base, cfg.ContainerdConfigPatches, cfg.ContainerdConfigPatchesJSON6902)
	if err != nil {
		c.fail("containerdConfigPatches do not apply to kind's base containerd config: %v", err)
		return ""
	}
	tree, err := toml.Load(patched)
	if err != nil {
		c.fail("patched containerd config is not TOML: %v", err)
		return patched
	}
	// The CRI keys of the base's config version (2: io.containerd.grpc.v1.cri, migrated by
	// containerd 2.x; 3 and later: io.containerd.cri.v1.runtime / .images).
	version, _ := tree.Get("version").(int64)
	runtime, images := []string{"plugins", "io.containerd.grpc.v1.cri"}, []string{"plugins", "io.containerd.grpc.v1.cri"}
	if version >= 3 {
		runtime, images = []string{"plugins", "io.containerd.cri.v1.runtime"}, []string{"plugins", "io.containerd.cri.v1.images"}
	}
	want := []struct {
		path  []string
		value any
	}{
		{append(append([]string{}, runtime...), "enable_criu"), true},
		{append(append([]string{}, runtime...), "enable_experimental_restore_via_create"), true},
		{append(append([]string{}, images...), "registry", "config_path"), "/etc/containerd/certs.d"},
	}
	for _, w := range want {
		if got := tree.GetPath(w.path); got != w.value {
			c.fail("containerd config (version %d): %s is %v, want %v", version, strings.Join(w.path, "."), got, w.value)
		}
	}
	return patched
}

func main() {
	configPath := flag.String("config", "cluster.yaml", "the kind cluster configuration")
	base := flag.String("containerd-base", "", "kind's base /etc/containerd/config.toml (of the pinned kind version)")
	k8sVersion := flag.String("kubernetes-version", "v1.36.3", "the node image's Kubernetes version (kind's template depends on it)")
	nodeSubnet := flag.String("node-subnet", "100.65.0.0/24", "the container network the nodes sit on (kind-up.sh creates it)")
	out := flag.String("out", "", "write the generated kubeadm configs and the patched containerd config here")
	flag.Parse()

	c := &checker{}
	cfg, err := encoding.Load(*configPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "validate: kind cannot load %s: %v\n", *configPath, err)
		os.Exit(1)
	}
	if err := cfg.Validate(); err != nil {
		c.fail("kind's Validate: %v", err)
	}
	if !cfg.FeatureGates["ContainerCheckpoint"] {
		c.fail("featureGates.ContainerCheckpoint is not true")
	}
	c.nonPrivate("networking.podSubnet", cfg.Networking.PodSubnet)
	c.nonPrivate("networking.serviceSubnet", cfg.Networking.ServiceSubnet)
	c.nonPrivate("node network", *nodeSubnet)
	if ip := net.ParseIP(cfg.Networking.APIServerAddress); ip == nil || !ip.IsLoopback() {
		c.fail("networking.apiServerAddress %q is not a loopback address", cfg.Networking.APIServerAddress)
	}
	roles := map[string]int{}
	for _, n := range cfg.Nodes {
		roles[string(n.Role)]++
	}
	if roles[constants.WorkerNodeRoleValue] < 2 {
		c.fail("%d worker nodes: a pod needs two to move between", roles[constants.WorkerNodeRoleValue])
	}

	files := map[string]string{}
	_, subnet, err := net.ParseCIDR(*nodeSubnet)
	if err == nil {
		for i, name := range nodeNames(cfg) {
			// Addresses as the provider would hand them out (.1 is the gateway).
			ip := make(net.IP, len(subnet.IP.To4()))
			copy(ip, subnet.IP.To4())
			ip[3] += byte(2 + i)
			rendered, err := kubeadmConfig(cfg, cfg.Nodes[i], name, ip.String(), *k8sVersion)
			if err != nil {
				c.fail("%s: kind cannot generate its kubeadm config: %v", name, err)
				continue
			}
			c.checkKubeadm(name, rendered, cfg)
			files["kubeadm-"+name+".yaml"] = rendered
		}
	}
	if *base == "" {
		c.fail("-containerd-base is required (kind's images/base/files/etc/containerd/config.toml)")
	} else if raw, err := os.ReadFile(*base); err != nil {
		c.fail("reading kind's base containerd config: %v", err)
	} else if patched := c.checkContainerd(string(raw), cfg); patched != "" {
		files["containerd.toml"] = patched
	}

	if *out != "" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			c.fail("%v", err)
		}
		names := make([]string, 0, len(files))
		for name := range files {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			if err := os.WriteFile(filepath.Join(*out, name), []byte(files[name]), 0o644); err != nil {
				c.fail("%v", err)
			}
		}
	}
	if len(c.failures) > 0 {
		for _, f := range c.failures {
			fmt.Fprintln(os.Stderr, "validate: FAIL:", f)
		}
		os.Exit(1)
	}
	fmt.Printf("validate: OK: %s (cluster %q, %d nodes, pods %s, services %s, nodes on %s, Kubernetes %s)\n",
		*configPath, cfg.Name, len(cfg.Nodes), cfg.Networking.PodSubnet, cfg.Networking.ServiceSubnet, *nodeSubnet, *k8sVersion)
}
