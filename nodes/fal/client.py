"""fal.ai over plain httpx: one `FalClient` made of the queue, storage and transfer parts.

Follows fal's own clients (shared/notes/fal-protocol.md) with deliberate differences:
- a submit is retried only when it certainly created no job, so a job is never billed twice; an ambiguous
  submit is followed by its request id or reported as possibly billed (`queue.py`);
- the API key goes only to fal's hosts and the configured queue / REST bases (never to the CDN or a download
  URL) and never appears in an exception, a log line or a repr (`http.py`, `hosts.py`);
- every base URL can be overridden (`FalHosts`, `resolve_hosts`) for tests and proxies.

Use one `FalClient` per event loop: `async with FalClient(key, hosts) as fal: ...`.
"""
from __future__ import annotations

from .http import FalHttp
from .queue import QueueMixin
from .storage import StorageMixin
from .transfer import TransferMixin


class FalClient(QueueMixin, StorageMixin, TransferMixin, FalHttp):
    """Async fal client: `async with FalClient(key, hosts) as fal:` (one per event loop).

    Queue: `submit`, `status`, `watch`, `result`, `cancel`; storage: `upload_file`; transfer: `download`.
    """
