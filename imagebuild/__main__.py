"""``python -m imagebuild``: build podmigrate's image and push it.

Prints the pushed reference by digest on stdout (for scripts: ``ref=$(python -m imagebuild ...)``)
and what was pushed, with the image's compressed size, on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from imagebuild import build, packages, project
from ocicheckpoint.credentials import load_docker_config
from ocicheckpoint.reference import is_loopback


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m imagebuild", description=__doc__.splitlines()[0])
    parser.add_argument("--registry", required=True, help="HOST:PORT of the registry to push to")
    parser.add_argument("--repository", default="podmigrate", help="repository in that registry (default: podmigrate)")
    parser.add_argument(
        "--tag",
        action="append",
        dest="tags",
        help="tag to push (repeatable; default: <version> and <version>-<short commit>[-dirty])",
    )
    parser.add_argument(
        "--registry-credentials", type=Path, default=None,
        help="a .dockerconfigjson with credentials for the registry "
        "(the local cluster's: <state>/registry-auth/cluster-images.dockerconfigjson)",
    )  # fmt: skip
    parser.add_argument("--plain-http", action="store_true", help="talk HTTP, not HTTPS (implied for a loopback registry)")
    parser.add_argument("--refresh", action="store_true", help="ask PyPI for newer dependency wheels instead of using the cache")
    parser.add_argument("--no-bytecode", action="store_true", help="ship no precompiled .pyc (smaller, slower to start)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="wheel cache (default: ~/.cache/podmigrate/imagebuild/...)")
    return parser.parse_args(argv)


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def report(pushed: build.Pushed) -> None:
    print(f"wheels: {'downloaded from PyPI' if pushed.wheels_downloaded else 'all from the cache'}", file=sys.stderr)
    print(f"pushed {', '.join(pushed.tags)}", file=sys.stderr)
    layers = ", ".join(f"{name} {_mib(size)}" for name, size in pushed.layer_sizes.items())
    print(f"image size (compressed): {_mib(pushed.compressed_size)} ({pushed.compressed_size} bytes; {layers})", file=sys.stderr)
    print(pushed.reference)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    proj = project.load_project()
    revision = project.read_revision(root=proj.root)
    tags = args.tags or project.default_tags(version=proj.version, revision=revision)
    cache = args.cache_dir or packages.cache_dir()
    options = build.BuildOptions(cache=cache, refresh=args.refresh, bytecode=not args.no_bytecode)
    pushed = asyncio.run(
        build.build_and_push(
            project=proj,
            revision=revision,
            options=options,
            registry=args.registry,
            repository=args.repository,
            tags=tags,
            plain_http=args.plain_http or is_loopback(args.registry),
            credentials=load_docker_config(args.registry_credentials) if args.registry_credentials else None,
        )
    )
    report(pushed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
