"""Deploying ``modelloop serve`` elsewhere: Kubernetes manifests for a served model.

:func:`kubernetes_manifests` gives a Deployment running ``modelloop serve NAME@ALIAS`` (probes
on the V2 health routes, resources from the measured RSS, termination grace covering the
server's drain), a Service, a HorizontalPodAutoscaler on CPU as the reactive floor, and a KEDA
ScaledObject whose cron triggers follow a predictive plan (a sequence of :class:`ReplicaStep`)
when one is given. :func:`write_manifests` writes them as YAML files (``pip install
'modelloop[deploy]'``); ``modelloop deploy k8s NAME@ALIAS`` does both from the command line.
"""

from modelloop.deploy._k8s import (
    DEFAULT_DRAIN_DELAY_S,
    DEFAULT_IMAGE,
    HOME_MOUNT,
    LIVENESS_PATH,
    READINESS_PATH,
    SERVE_GRACE_S,
    SERVE_PORT,
    ReplicaStep,
    cron_windows,
    k8s_name,
    kubernetes_manifests,
    peak_rss_bytes,
    termination_grace_s,
    write_manifests,
)

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
