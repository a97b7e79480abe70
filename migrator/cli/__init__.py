"""``kubectl-migrate``: the kubectl plugin that asks for pod migrations and checkpoints and shows how they went.

It talks only to the Kubernetes API (PodMigrations, NodeDrains, PodCheckpoints, PodRestores,
CheckpointSchedules, pods, nodes, events), never to agents. The modules keep the concerns apart:
``arguments`` (the command line), ``kubeapi`` (the few API calls, behind a small protocol so tests
can fake them), ``commands`` (what each PodMigration command does) and ``printing`` (every table,
duration and line the user sees); ``drains`` and ``drainprinting`` do the same for NodeDrains, and
``checkpoints`` and ``checkpointprinting`` for checkpoints as objects of their own (``checkpoint``,
``restore``, ``checkpoints``, ``inspect``, ``get checkpoints|restores|schedules``).
"""

from migrator.cli.main import main

__all__ = ["main"]
