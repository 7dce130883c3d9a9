"""Kubernetes manifests for ``modelloop serve``: Deployment, Service, HPA and a KEDA ScaledObject.

What the manifests rely on, and why:

* **Probes.** Liveness is ``/v2/health/live`` (answers at once, 500 only when start-up failed);
  readiness is ``/v2/health/ready`` (400 until every model is loaded, and again from SIGTERM on).
  The server asks a bearer token on every route once it has tokens, which it needs off loopback,
  and a kubelet ``httpGet`` probe cannot take a header from a Secret. So with tokens the probes
  are ``exec`` probes: a few lines of the image's Python (standard library only, ``-S``) that
  GET the same route on 127.0.0.1 with the first token of ``MODELLOOP_SERVE_TOKENS``, which the
  container has from its Secret anyway. Without a tokens Secret the server runs
  ``--allow-unauthenticated`` and the probes are plain ``httpGet``.
* **Shutdown.** On SIGTERM the server turns readiness off and keeps answering for
  ``--drain-delay`` seconds (what a ``preStop`` sleep would do, without needing ``sleep`` in the
  image), so the endpoints controller and the proxies drop the pod before it stops accepting;
  then uvicorn waits up to ``--grace`` seconds for in-flight requests, and the app gets another
  ``--grace`` for queued batches and the last prediction-log and ops-history writes (at least a
  second each). ``terminationGracePeriodSeconds`` covers all of it plus a margin
  (:func:`termination_grace_s`), so the kubelet's SIGKILL never cuts a drain short.
* **Resources.** Memory request = peak measured RSS x 1.25, limit = peak x 2 (batches of large
  requests and a prediction log that cannot write for a while need room); without a measurement
  512Mi / 1Gi. CPU has a request (the HPA's utilisation is relative to it) and no limit (CFS
  throttling shows up as tail latency). The Deployment's annotations say which was used.
* **Store.** ``MODELLOOP_STORE_URL`` (a ``modelloop server`` URL or a database URL),
  ``MODELLOOP_TOKEN`` and ``MODELLOOP_ARTIFACT_ROOT`` come from one Secret, the serving tokens
  from another; no token is ever written in a manifest. ``MODELLOOP_HOME`` is an ``emptyDir``
  (prediction log, ops history, caches of this pod).
* **Scaling.** The HPA scales on CPU utilisation. The ScaledObject takes that HPA over (KEDA's
  ``transfer-hpa-ownership``) and adds one cron trigger per run of plan steps with the same
  replica count above the floor. KEDA feeds every trigger to that one HPA, which takes the
  largest replica count any of them asks for: the plan is a floor that rises ahead of demand,
  CPU still reacts to what the plan missed. Cron times are in UTC (``Etc/UTC``): plan steps are
  instants, and UTC has no daylight-saving gap or fold in which a local cron would fire never or
  twice. Starts are rounded down and ends up to the minute (cron's resolution), so the pods are
  never fewer than the plan asks.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import math
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop import __version__
from modelloop.exceptions import InvalidInput, NotFound
from modelloop.serving._auth import TOKENS_ENV

if TYPE_CHECKING:
    import os

__all__ = [
    "DEFAULT_DRAIN_DELAY_S",
    "DEFAULT_IMAGE",
    "HOME_MOUNT",
    "LIVENESS_PATH",
    "READINESS_PATH",
    "SERVE_GRACE_S",
    "SERVE_PORT",
    "ReplicaStep",
    "cron_windows",
    "k8s_name",
    "kubernetes_manifests",
    "peak_rss_bytes",
    "termination_grace_s",
    "write_manifests",
]


def _serve_defaults() -> tuple[int, float]:
    """The server's default port and ``--grace``, read from the server itself (the command
    line's defaults are the same; the tests check both)."""
    from modelloop.serving._app import ServeConfig
    from modelloop.serving._server import serve

    return inspect.signature(serve).parameters["port"].default, ServeConfig().grace_s


#: ``modelloop serve``'s default port, and the seconds it gives in-flight requests on SIGTERM.
SERVE_PORT, SERVE_GRACE_S = _serve_defaults()
#: Seconds the pod keeps answering after SIGTERM, readiness off, before it stops accepting
#: (``--drain-delay``; the server's own default, 0, suits a process nobody load-balances).
DEFAULT_DRAIN_DELAY_S = 5.0
#: Seconds past the server's own worst case before the kubelet may SIGKILL.
TERMINATION_MARGIN_S = 5.0
#: The V2 health routes the probes use.
LIVENESS_PATH = "/v2/health/live"
READINESS_PATH = "/v2/health/ready"
#: The image: one with ``pip install 'modelloop[serve]'`` of this version and a ``modelloop``
#: command (build it yourself; see the README).
DEFAULT_IMAGE = f"modelloop:{__version__}"
#: Where the pod's ``MODELLOOP_HOME`` (an emptyDir) is mounted.
HOME_MOUNT = "/var/lib/modelloop"
DEFAULT_MEMORY_REQUEST = "512Mi"
DEFAULT_MEMORY_LIMIT = "1Gi"
DEFAULT_CPU = "500m"
MEMORY_REQUEST_HEADROOM = 1.25
MEMORY_LIMIT_FACTOR = 2.0

_MI = 1024 * 1024
_CPU = re.compile(r"^(\d+(\.\d+)?|\d+m)$")
_CONTAINER = "serve"
_PART_OF = "modelloop"
_KEDA_TZ = "Etc/UTC"


@dataclass(frozen=True)
class ReplicaStep:
    """One interval of a predictive plan: from ``start`` (tz-aware) until the next step's start,
    ``replicas`` pods."""

    start: datetime
    replicas: int


def termination_grace_s(grace_s: float, drain_delay_s: float) -> int:
    """``terminationGracePeriodSeconds`` for a server run with ``--grace grace_s`` and
    ``--drain-delay drain_delay_s``: the drain delay, uvicorn's wait for in-flight requests
    (whole seconds, at least one), the app's own shutdown within another grace period (plus a
    second each for the prediction log and the ops history), and a margin."""
    connections = max(1, int(grace_s))
    app = max(grace_s, 0.0) + 2.0
    return math.ceil(drain_delay_s + connections + app + TERMINATION_MARGIN_S)


def peak_rss_bytes(
    model: str,
    *,
    home: str | os.PathLike[str] | None = None,
    since: str | datetime | float | None = None,
) -> int | None:
    """The largest RSS recorded in ``model``'s operational history (``modelloop serve`` records
    it under ``$MODELLOOP_HOME/ops``), or None when there is no history or no RSS in it."""
    from modelloop.aiops._history import read_ops_history

    try:
        frame = read_ops_history(model, since, home=home)
    except NotFound:
        return None
    if "rss_bytes" not in frame.columns:
        return None
    rss = frame["rss_bytes"].dropna()
    rss = rss[rss > 0]
    return int(rss.max()) if len(rss) else None


def _integer(value: object) -> int | None:
    """``value`` as a Python int when it is an integer (numpy's too, bool not), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def _mebibytes(n: float) -> str:
    return f"{math.ceil(n / _MI)}Mi"


def _seconds(value: float) -> str:
    return f"{value:g}"


def k8s_name(model: str) -> str:
    """A DNS-1035 label (what a Service name must be) for ``model``: lower case, letters, digits
    and dashes, starting with a letter, at most 63 characters; a short digest of the model name
    is added when anything had to change, so two models never share a name."""
    base = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    if not base or not base[0].isalpha():
        base = f"m-{base}".rstrip("-")
    if base == model and len(base) <= 63:
        return base
    digest = hashlib.sha256(model.encode()).hexdigest()[:6]
    return f"{base[: 63 - 7].rstrip('-')}-{digest}"


def _probe_script(port: int, path: str, timeout_s: int) -> str:
    # Standard library only: the probe is run with ``python -S`` every few seconds.
    return (
        "import os, sys, urllib.request as u\n"
        f"t = [s.strip().split(':')[0] for s in os.environ.get('{TOKENS_ENV}', '').split(',')"
        " if s.strip()]\n"
        f"r = u.Request('http://127.0.0.1:{port}{path}',"
        " headers={'Authorization': 'Bearer ' + t[0]} if t else {})\n"
        "try:\n"
        f"    u.urlopen(r, timeout={timeout_s}).close()\n"
        "except Exception as e:\n"
        f"    sys.exit('{path}: ' + str(e))\n"
    )


def _probe(
    path: str, port: int, *, exec_: bool, period_s: int, timeout_s: int, failures: int
) -> dict[str, Any]:
    probe: dict[str, Any]
    if exec_:
        script = _probe_script(port, path, max(1, timeout_s - 1))
        probe = {"exec": {"command": ["python", "-S", "-c", script]}}
    else:
        probe = {"httpGet": {"path": path, "port": "http", "scheme": "HTTP"}}
    probe.update(
        periodSeconds=period_s,
        timeoutSeconds=timeout_s,
        failureThreshold=failures,
        successThreshold=1,
    )
    return probe


def _secret_env(name: str, secret: str, *, optional: bool) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": name}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _check_schedule(
    schedule: Sequence[ReplicaStep], schedule_end: datetime | None, max_replicas: int
) -> list[tuple[datetime, datetime, int]]:
    """The plan's steps as (start, end, replicas) in UTC, or InvalidInput saying what is wrong."""
    if not schedule:
        raise InvalidInput("the plan has no steps: give at least one ReplicaStep, or no schedule")
    steps: list[tuple[datetime, int]] = []
    for i, step in enumerate(schedule):
        if not isinstance(step.start, datetime) or step.start.tzinfo is None:
            raise InvalidInput(
                f"plan step {i} starts at {step.start!r}: give a timezone-aware datetime (UTC)"
            )
        replicas = _integer(step.replicas)
        if replicas is None or replicas < 0:
            raise InvalidInput(
                f"plan step {i} has {step.replicas!r} replicas: give an integer >= 0"
            )
        if replicas > max_replicas:
            raise InvalidInput(
                f"plan step {i} ({step.start.isoformat()}) asks for {replicas} replicas, more "
                f"than max_replicas={max_replicas}"
            )
        start = step.start.astimezone(UTC)
        if hasattr(start, "to_pydatetime"):  # a pandas Timestamp
            start = start.to_pydatetime()
        if steps and start <= steps[-1][0]:
            raise InvalidInput(
                f"plan step {i} starts at {start.isoformat()}, not after step {i - 1} "
                f"({steps[-1][0].isoformat()}): steps must be in increasing time order"
            )
        steps.append((start, replicas))
    if schedule_end is not None:
        if schedule_end.tzinfo is None:
            raise InvalidInput("schedule_end must be a timezone-aware datetime (UTC)")
        end = schedule_end.astimezone(UTC)
        if end <= steps[-1][0]:
            raise InvalidInput(
                f"schedule_end {end.isoformat()} is not after the last step's start "
                f"{steps[-1][0].isoformat()}"
            )
    else:  # the last step lasts as long as the one before it (an hour for a one-step plan)
        length = steps[-1][0] - steps[-2][0] if len(steps) > 1 else timedelta(hours=1)
        end = steps[-1][0] + length
    ends = [s for s, _ in steps[1:]] + [end]
    return [(s, e, r) for (s, r), e in zip(steps, ends, strict=True)]


def _cron(at: datetime) -> str:
    """A five-field cron expression firing at ``at``'s minute (UTC) on its day of the year."""
    return f"{at.minute} {at.hour} {at.day} {at.month} *"


def cron_windows(
    steps: Sequence[tuple[datetime, datetime, int]], floor: int
) -> list[tuple[datetime, datetime, int]]:
    """Windows (start rounded down, end rounded up to the minute; UTC) of consecutive steps with
    the same replica count above ``floor``: what the cron triggers say."""
    merged: list[list[Any]] = []
    for start, end, replicas in steps:
        if merged and merged[-1][2] == replicas and merged[-1][1] == start:
            merged[-1][1] = end
        else:
            merged.append([start, end, replicas])
    out = []
    for start, end, replicas in merged:
        if replicas <= floor:
            continue
        lo = start.replace(second=0, microsecond=0)
        hi = end.replace(second=0, microsecond=0)
        if hi < end:
            hi += timedelta(minutes=1)
        # A five-field cron has no year: a window is the stretch from a start to the next end,
        # which holds for windows under a year whose days come back every year.
        if hi - lo >= timedelta(days=365):
            raise InvalidInput(
                f"the plan keeps {replicas} replicas from {lo.isoformat()} to {hi.isoformat()}: "
                "cron triggers cannot express a window of a year or more"
            )
        for at in (lo, hi):
            if (at.month, at.day) == (2, 29):
                raise InvalidInput(
                    f"a plan window starts or ends on 29 February ({at.isoformat()}): a cron "
                    "trigger has no year and would fire again only in four years; shift the "
                    "plan's steps off that day"
                )
        out.append((lo, hi, replicas))
    return out


def kubernetes_manifests(
    ref: str,
    *,
    image: str = DEFAULT_IMAGE,
    port: int = SERVE_PORT,
    min_replicas: int = 1,
    max_replicas: int = 10,
    rss_bytes: int | None = None,
    cpu: str | None = None,
    drain_s: float = SERVE_GRACE_S,
    drain_delay_s: float = DEFAULT_DRAIN_DELAY_S,
    schedule: Sequence[ReplicaStep] | None = None,
    schedule_end: datetime | None = None,
    namespace: str | None = None,
    name: str | None = None,
    store_url_secret: str | None = "modelloop-store",
    serve_tokens_secret: str | None = "modelloop-serve-tokens",
    target_cpu_percent: int = 70,
    serve_args: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Deployment, Service, HorizontalPodAutoscaler and KEDA ScaledObject serving ``ref``
    (``NAME@ALIAS``, ``NAME/VERSION`` or ``NAME``), as plain dicts in that order.

    ``rss_bytes`` (the peak RSS measured, e.g. :func:`peak_rss_bytes`) sizes the memory;
    ``cpu`` is the CPU request (Kubernetes quantity, default ``500m``). ``drain_s`` is the
    server's ``--grace``, ``drain_delay_s`` its ``--drain-delay``. ``schedule`` is a predictive
    plan: its steps become cron triggers of the ScaledObject (the last one lasts until
    ``schedule_end``, default as long as the step before it). ``store_url_secret`` names the
    Secret with ``MODELLOOP_STORE_URL`` (and optionally ``MODELLOOP_TOKEN``,
    ``MODELLOOP_ARTIFACT_ROOT``), None for an image that carries its store;
    ``serve_tokens_secret`` the Secret with ``MODELLOOP_SERVE_TOKENS``, None to serve without
    tokens (``--allow-unauthenticated``). ``serve_args`` are more ``modelloop serve`` options.
    """
    from modelloop.registry._uri import parse_model_spec

    model = parse_model_spec(ref).name
    name = name or k8s_name(model)
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise InvalidInput(
            f"bad name {name!r}: lower-case letters, digits and '-', starting with a letter, "
            "at most 63 characters"
        )
    counts = {}
    for label, value in (("min_replicas", min_replicas), ("max_replicas", max_replicas)):
        count = _integer(value)
        if count is None or count < 1:
            raise InvalidInput(f"{label} must be an integer >= 1, got {value!r}")
        counts[label] = count
    min_replicas, max_replicas = counts["min_replicas"], counts["max_replicas"]
    if min_replicas > max_replicas:
        raise InvalidInput(f"min_replicas {min_replicas} is above max_replicas {max_replicas}")
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidInput(f"port must be between 1 and 65535, got {port!r}")
    if rss_bytes is not None:
        rss = _integer(rss_bytes)
        if rss is None or rss <= 0:
            raise InvalidInput(f"rss_bytes must be a positive integer, got {rss_bytes!r}")
        rss_bytes = rss
    if cpu is not None and not _CPU.match(cpu):
        raise InvalidInput(f"bad cpu {cpu!r}: a Kubernetes CPU quantity such as 500m or 2")
    for label, seconds in (("drain_s", drain_s), ("drain_delay_s", drain_delay_s)):
        if not isinstance(seconds, int | float) or not (0 <= seconds <= 3600):
            raise InvalidInput(f"{label} must be between 0 and 3600 seconds, got {seconds!r}")
    if not 1 <= target_cpu_percent <= 100:
        raise InvalidInput(f"target_cpu_percent must be 1 to 100, got {target_cpu_percent}")
    steps = _check_schedule(schedule, schedule_end, max_replicas) if schedule is not None else None

    labels = {
        "app.kubernetes.io/name": "modelloop-serve",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": _PART_OF,
        "app.kubernetes.io/managed-by": "modelloop",
    }
    selector = {"app.kubernetes.io/name": "modelloop-serve", "app.kubernetes.io/instance": name}

    def meta(**annotations: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "labels": dict(labels)}
        if namespace:
            out["namespace"] = namespace
        if annotations:
            out["annotations"] = annotations
        return out

    if rss_bytes is not None:
        memory_request = _mebibytes(rss_bytes * MEMORY_REQUEST_HEADROOM)
        memory_limit = _mebibytes(rss_bytes * MEMORY_LIMIT_FACTOR)
        memory_note = (
            f"memory from the peak RSS measured, {_mebibytes(rss_bytes)}: request x"
            f"{MEMORY_REQUEST_HEADROOM:g}, limit x{MEMORY_LIMIT_FACTOR:g}"
        )
    else:
        memory_request, memory_limit = DEFAULT_MEMORY_REQUEST, DEFAULT_MEMORY_LIMIT
        memory_note = (
            f"memory: defaults {DEFAULT_MEMORY_REQUEST} request / {DEFAULT_MEMORY_LIMIT} limit "
            "(no RSS measured: serve the model a while, then regenerate)"
        )
    cpu_request = cpu or DEFAULT_CPU
    cpu_note = (
        f"cpu: request {cpu_request}{'' if cpu else ' (default)'}, no limit (throttling adds "
        f"latency); the HPA targets {target_cpu_percent}% of the request"
    )
    grace_period = termination_grace_s(drain_s, drain_delay_s)
    auth = serve_tokens_secret is not None

    args = [
        "serve",
        ref,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--grace",
        _seconds(drain_s),
        "--drain-delay",
        _seconds(drain_delay_s),
    ]
    if not auth:
        args.append("--allow-unauthenticated")
    args.extend(serve_args)
    env: list[dict[str, Any]] = [{"name": "MODELLOOP_HOME", "value": HOME_MOUNT}]
    if store_url_secret is not None:
        env.append(_secret_env("MODELLOOP_STORE_URL", store_url_secret, optional=False))
        env.append(_secret_env("MODELLOOP_TOKEN", store_url_secret, optional=True))
        env.append(_secret_env("MODELLOOP_ARTIFACT_ROOT", store_url_secret, optional=True))
    if serve_tokens_secret is not None:
        env.append(_secret_env(TOKENS_ENV, serve_tokens_secret, optional=False))

    container = {
        "name": _CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["modelloop"],
        "args": args,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": env,
        "resources": {
            "requests": {"cpu": cpu_request, "memory": memory_request},
            "limits": {"memory": memory_limit},
        },
        # Liveness answers at once (models load in the background), so no startup probe.
        "livenessProbe": _probe(
            LIVENESS_PATH, port, exec_=auth, period_s=10, timeout_s=5, failures=3
        ),
        "readinessProbe": _probe(
            READINESS_PATH, port, exec_=auth, period_s=5, timeout_s=3, failures=2
        ),
        "volumeMounts": [
            {"name": "home", "mountPath": HOME_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(
            **{
                "modelloop/model": ref,
                "modelloop/resources": f"{memory_note}; {cpu_note}",
                "modelloop/termination": (
                    f"terminationGracePeriodSeconds {grace_period} = --drain-delay "
                    f"{_seconds(drain_delay_s)} + --grace {_seconds(drain_s)} for in-flight "
                    f"requests + --grace {_seconds(drain_s)} (+2) for queued batches and the "
                    f"last log writes + {TERMINATION_MARGIN_S:g} margin"
                ),
                "modelloop/probes": (
                    "exec: GET on 127.0.0.1 with a token of MODELLOOP_SERVE_TOKENS (every route "
                    "needs one)"
                    if auth
                    else "httpGet (served without tokens)"
                ),
            }
        ),
        "spec": {
            # no "replicas": the HPA owns the count, and re-applying must not reset it
            "selector": {"matchLabels": dict(selector)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "terminationGracePeriodSeconds": grace_period,
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "home", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [
                {
                    "name": "http",
                    "port": port,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }
    behavior = {
        # The plan already holds replicas through its own stabilisation; the reactive side waits
        # five minutes of lower load before it gives pods back, and may double every 15 s.
        "scaleDown": {
            "stabilizationWindowSeconds": 300,
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
        },
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 15},
                {"type": "Pods", "value": 4, "periodSeconds": 15},
            ],
        },
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": target_cpu_percent},
                    },
                }
            ],
            "behavior": behavior,
        },
    }
    triggers: list[dict[str, Any]] = []
    plan_note = "no plan: CPU utilisation only"
    if steps is not None:
        windows = cron_windows(steps, min_replicas)
        for i, (start, end, replicas) in enumerate(windows, start=1):
            triggers.append(
                {
                    "type": "cron",
                    "name": f"plan-{i}",
                    "metadata": {
                        "timezone": _KEDA_TZ,
                        "start": _cron(start),
                        "end": _cron(end),
                        "desiredReplicas": str(replicas),
                    },
                }
            )
        plan_note = (
            f"plan from {steps[0][0].isoformat()} to {steps[-1][1].isoformat()} (UTC), "
            f"{len(windows)} cron windows above the floor of {min_replicas}; after a window "
            "the HPA gives pods back once its 300 s scale-down stabilisation has passed; cron "
            "dates recur yearly: regenerate the plan before it ends"
        )
    triggers.append(
        {
            "type": "cpu",
            "name": "cpu",
            "metricType": "Utilization",
            "metadata": {"value": str(target_cpu_percent), "containerName": _CONTAINER},
        }
    )
    scaled_object = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta(
            **{
                # KEDA adopts the HPA above (same name) instead of refusing a second one.
                "scaledobject.keda.sh/transfer-hpa-ownership": "true",
                "modelloop/plan": plan_note,
            }
        ),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "pollingInterval": 15,
            "minReplicaCount": min_replicas,
            "maxReplicaCount": max_replicas,
            "advanced": {
                "restoreToOriginalReplicaCount": False,
                "horizontalPodAutoscalerConfig": {
                    "name": name,
                    "behavior": copy.deepcopy(behavior),
                },
            },
            "triggers": triggers,
        },
    }
    return [deployment, service, hpa, scaled_object]


_FILE_NAMES = {
    "Deployment": "deployment",
    "Service": "service",
    "HorizontalPodAutoscaler": "hpa",
    "ScaledObject": "keda-scaledobject",
}

_HEADERS = {
    "HorizontalPodAutoscaler": (
        "Reactive floor on CPU; works without KEDA. With KEDA, the ScaledObject (applied after "
        "it) takes this HPA over and adds the plan's triggers."
    ),
    "ScaledObject": (
        "Needs KEDA (keda.sh). Apply after the HPA: it takes that HPA over "
        "(transfer-hpa-ownership); KEDA scales to the largest count any trigger asks for."
    ),
}


def write_manifests(manifests: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write each manifest as a YAML file in ``out_dir`` (created), named so that
    ``kubectl apply -f out_dir`` applies them in order (the HPA before the ScaledObject that
    takes it over); returns the paths."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - the deploy extra
        raise InvalidInput(
            "writing manifests needs PyYAML: pip install 'modelloop[deploy]'"
        ) from None

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        # the probe scripts read as code: a literal block rather than one escaped line
        style = "|" if "\n" in value and value.strip() else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, manifest in enumerate(manifests, start=1):
        kind = str(manifest.get("kind", "manifest"))
        stem = _FILE_NAMES.get(kind, re.sub(r"[^a-z0-9]+", "-", kind.lower()))
        path = out_dir / f"{i:02d}-{stem}.yaml"
        header = f"# Generated by modelloop {__version__} (modelloop deploy k8s).\n"
        note = _HEADERS.get(kind)
        if note:
            header += f"# {note}\n"
        text = yaml.dump(
            manifest, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100
        )
        path.write_text(header + text, encoding="utf-8")
        paths.append(path)
    return paths
