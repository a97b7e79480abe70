"""podmigrate's own container image, built without Docker.

The ``Containerfile`` at the top of the repository is the recipe for ``docker build`` / podman /
buildah. This package builds the same content where none of those exist and no base image can be
pulled (the local cluster's machine): Debian's ``/usr/bin/python3`` with its libraries and stdlib,
the runtime dependencies' wheels from PyPI, podmigrate's wheel, console scripts in
``/usr/local/bin``; written as a reproducible OCI image and pushed with the project's own
registry client (``ocicheckpoint``). ``python -m imagebuild --registry HOST:PORT`` or
``make image REGISTRY=HOST:PORT``.
"""
