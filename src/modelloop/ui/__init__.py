"""The web dashboard: experiments, runs (filter, sort, columns, pages), run detail with metric
charts, run comparison, and registered models with their versions, lineage and alias history.

Server-rendered pages (Starlette + Jinja2 with autoescaping) and a little vanilla JavaScript;
plotly.js comes from the installed ``plotly`` package, so nothing is fetched from the network and
installing needs no npm. :func:`create_app` builds the ASGI app over a :class:`~modelloop.Client`:
``modelloop ui`` serves it on loopback for one person, and ``modelloop server`` mounts it at
``/ui`` behind a token login (sessions, CSRF tokens and role checks: :mod:`modelloop.ui._auth`).
"""

from __future__ import annotations

from modelloop.ui._app import create_app
from modelloop.ui._charts import downsample

__all__ = ["create_app", "downsample"]
