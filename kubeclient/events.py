"""Recording Kubernetes Events: one way for every component (control service, drains, the local node).

Events are how ``kubectl describe`` tells an object's story. Each carries ``eventTime`` with
microseconds (and the ``action`` that requires), not only the second-resolution
``firstTimestamp``, so a timeline can place it and two Events of one second keep their order.
Recording is best effort: a lost Event must never fail the work it describes.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from kubernetes_asyncio import client

log = logging.getLogger(__name__)


async def record_event(
    core: client.CoreV1Api,
    *,
    namespace: str,
    involved: client.V1ObjectReference,
    reason: str,
    message: str,
    component: str,
    warning: bool = False,
    host: str | None = None,
) -> None:
    now = datetime.now(UTC)
    body = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{involved.name}.", namespace=namespace),
        involved_object=involved,
        reason=reason,
        message=message[:1000],
        type="Warning" if warning else "Normal",
        source=client.V1EventSource(component=component, host=host),
        first_timestamp=now,
        last_timestamp=now,
        event_time=now,
        action=reason,
        count=1,
        reporting_component=component,
        reporting_instance=host or component,
    )
    try:
        await core.create_namespaced_event(namespace, body)
    except client.ApiException as exc:
        log.warning("event %s on %s %s not recorded: %s", reason, involved.kind, involved.name, exc.reason)
