"""What a tag names in the registry now, so that no checkpoint image is left behind under it.

Why the agent looks tags up at all: a checkpoint image is pushed under the tag its caller chose
(one per migration) and answered by digest. When a checkpoint is done a second time under the
same tag (a retry the agent no longer remembers: it restarted, or the first answer was forgotten
after ``REQUEST_MEMORY_S``), the push moves the tag and the first manifest stays in the registry
untagged, named by nobody, holding process memory. So before a push the agent reads what the tag
names, and after it deletes that manifest when it is not the one just pushed. And a caller that
never got the answer (it knows the tag, not the digest) can still have the image deleted by tag.
"""

from __future__ import annotations

from node_agent.publishing import Publisher
from ocicheckpoint.registry import RegistryError


async def tagged_digest(publisher: Publisher, *, registry: str, repository: str, tag: str) -> str | None:
    """The digest of the manifest ``repository:tag`` names now; None when the registry has no such tag.

    Other failures (the registry unreachable, refusing) raise: the caller decides whether not
    knowing is fatal (a deletion by tag) or only worth a warning (the look before a push).
    """
    try:
        _, _, digest = await publisher.client(registry).get_manifest(repository=repository, reference=tag)
    except RegistryError as exc:
        if exc.status == 404:
            return None
        raise
    return digest
