"""``kubectl-migrate``: the kubectl plugin that asks for pod migrations and shows how they went.

It talks only to the Kubernetes API (PodMigrations, pods, nodes, events), never to agents.
The modules keep the three concerns apart: ``arguments`` (the command line), ``kubeapi`` (the
few API calls, behind a small protocol so tests can fake them), ``commands`` (what each
command does) and ``printing`` (every table, duration and line the user sees).
"""

from migrator.cli.main import main

__all__ = ["main"]
