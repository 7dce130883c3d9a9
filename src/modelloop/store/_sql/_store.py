"""The SQLAlchemy implementation of :class:`~modelloop.store.Store`."""

from __future__ import annotations

from modelloop.store._base import Store
from modelloop.store._sql._access import AccessMixin
from modelloop.store._sql._datasets import DatasetsMixin
from modelloop.store._sql._loop import LoopMixin
from modelloop.store._sql._monitoring import MonitoringMixin
from modelloop.store._sql._registry import RegistryMixin
from modelloop.store._sql._search import SearchMixin
from modelloop.store._sql._tracking import TrackingMixin

__all__ = ["SqlStore"]


class SqlStore(
    TrackingMixin,
    SearchMixin,
    DatasetsMixin,
    AccessMixin,
    RegistryMixin,
    MonitoringMixin,
    LoopMixin,
    Store,
):
    """The metadata store on SQLite (``sqlite:///path/to/file.db``) or PostgreSQL
    (``postgresql+psycopg://user@host/db``).

    Opening is cheap: nothing touches the database until first use, which creates or upgrades
    the schema (safe when many processes open a new database at once). SQLite runs in WAL mode
    and serialises writers with ``BEGIN IMMEDIATE``; contention is waited out, never raised.
    NaN metric values are stored as SQL NULL on both backends: they round-trip as NaN, match
    ``!=`` and no other comparison in search, and sort after every number. The same holds for the
    float columns of monitoring results and alerts (NaN comes back as None there); inside JSON
    values every non-finite float becomes null.
    """
