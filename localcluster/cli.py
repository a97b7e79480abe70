"""``localcluster up|down|status``: the local cluster from a shell (and from make)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from localcluster import cluster, demo

DEFAULT_STATE = Path(__file__).resolve().parent.parent / ".localcluster"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="localcluster", description="A real Kubernetes control plane, a registry and CRIU nodes."
    )
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the cluster and wait until every node is Ready")
    p_up.add_argument("--nodes", type=int, default=2, help="stand-in nodes (localcluster/node)")
    p_up.add_argument(
        "--real-nodes", type=int, default=0, help="real nodes: kubelet + containerd + runc + CRIU (localcluster/realnode)"
    )
    p_up.add_argument("--instance", type=int, default=0, help="0..5: run several clusters side by side")
    sub.add_parser("down", help="stop everything and remove the state directory")
    sub.add_parser("status", help="print where the cluster is (kubeconfig, registry, nodes)")
    p_demo = sub.add_parser("demo", help="checkpoint a warmed-up app on one node and restore it on another")
    p_demo.add_argument("--keep", action="store_true", help="leave the cluster running afterwards")
    p_demo.add_argument(
        "--real-nodes",
        action="store_true",
        help="move the app between two real nodes (kubelet + containerd) instead of stand-ins",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            c = cluster.up(state_dir=args.state_dir, nodes=args.nodes, instance=args.instance, real_nodes=args.real_nodes)
            print(f"export KUBECONFIG={c.kubeconfig}")
            print(f"# kubectl: {c.kubectl}   registry: {c.registry}")
        elif args.command == "demo":
            demo.run(state_dir=args.state_dir.resolve(), keep=args.keep, real_nodes=args.real_nodes)
        elif args.command == "down":
            stopped = cluster.down(state_dir=args.state_dir)
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        else:
            c = cluster.Cluster.load(args.state_dir.resolve())
            print(f"kubeconfig: {c.kubeconfig}\nkubectl: {c.kubectl}\nregistry: {c.registry}")
            for n in c.nodes:
                print(f"node: {n.name} {n.address} {n.kind}")
            for name, ref in c.images.items():
                print(f"image: {name} {ref}")
    except (cluster.ClusterError, cluster.processes.ProcessError, RuntimeError) as exc:
        print(f"localcluster: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
