"""The store and artifact store over HTTP: the client side of ``modelloop server``.

``MODELLOOP_STORE_URL=http(s)://host:port`` (with ``MODELLOOP_TOKEN``) makes every client use
:class:`HttpStore` and :class:`HttpArtifactStore`; the client then holds no database URL and no
bucket keys.
"""

from __future__ import annotations

from modelloop._config import is_server_url
from modelloop.store._http._artifacts import HttpArtifactStore
from modelloop.store._http._store import HttpStore
from modelloop.store._http._transport import Transport

__all__ = ["HttpArtifactStore", "HttpStore", "Transport", "is_server_url"]
