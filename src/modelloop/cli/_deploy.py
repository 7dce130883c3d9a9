"""``modelloop deploy``: manifests that run ``modelloop serve`` elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from modelloop.cli._output import JsonOpt, cli_client, console, err_console, print_json

deploy_app = typer.Typer(
    help="Manifests that run modelloop serve on a cluster.", no_args_is_help=True
)


@deploy_app.command("k8s")
def deploy_k8s(
    model: Annotated[
        str, typer.Argument(help="Model to serve: NAME@ALIAS (followed), NAME/VERSION or NAME.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write the YAML files into (created).")
    ] = Path("k8s"),
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            help="Container image with modelloop[serve] installed (default: modelloop:VERSION).",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=1,
            max=65535,
            help="Port the server listens on (default: modelloop serve's).",
            show_default=False,
        ),
    ] = None,
    min_replicas: Annotated[int, typer.Option("--min-replicas", min=1, help="Fewest pods.")] = 1,
    max_replicas: Annotated[int, typer.Option("--max-replicas", min=1, help="Most pods.")] = 10,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="Namespace of every object.")
    ] = None,
    cpu: Annotated[
        str | None,
        typer.Option("--cpu", help="CPU request per pod, e.g. 500m or 2 (default 500m)."),
    ] = None,
    store_secret: Annotated[
        str,
        typer.Option(
            "--store-secret",
            help="Secret holding MODELLOOP_STORE_URL (and MODELLOOP_TOKEN, "
            "MODELLOOP_ARTIFACT_ROOT if needed).",
        ),
    ] = "modelloop-store",
    tokens_secret: Annotated[
        str,
        typer.Option("--tokens-secret", help="Secret holding MODELLOOP_SERVE_TOKENS."),
    ] = "modelloop-serve-tokens",
    as_json: JsonOpt = False,
) -> None:
    """Kubernetes manifests serving MODEL: Deployment (V2 health probes, memory from the RSS in
    the ops history, termination grace covering the server's drain), Service,
    HorizontalPodAutoscaler on CPU and a KEDA ScaledObject. The model must be in the store."""
    from modelloop.cli._output import require_extra
    from modelloop.deploy import (
        DEFAULT_IMAGE,
        SERVE_PORT,
        kubernetes_manifests,
        peak_rss_bytes,
        write_manifests,
    )
    from modelloop.registry._uri import parse_model_spec

    require_extra("deploy", "yaml")
    spec = parse_model_spec(model)
    client = cli_client(writes=False)
    version = client.resolve(spec)  # NotFound (exit 3) for an unknown model, alias or version
    home = client.settings.home
    rss = peak_rss_bytes(spec.name, home=home)
    manifests = kubernetes_manifests(
        model,
        image=image or DEFAULT_IMAGE,
        port=SERVE_PORT if port is None else port,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        rss_bytes=rss,
        cpu=cpu,
        namespace=namespace,
        store_url_secret=store_secret,
        serve_tokens_secret=tokens_secret,
    )
    files = write_manifests(manifests, out)
    notes = []
    if not client.settings.remote and client.settings.store_url is None:
        notes.append(
            "this store is a SQLite file on this machine: pods need one they can reach; put a "
            f"modelloop server URL (and MODELLOOP_TOKEN) or a database URL in {store_secret}"
        )
    if rss is None:
        notes.append(
            f"no RSS recorded for {spec.name} under {home / 'ops'}: default memory sizes used "
            "(serve it a while, then run this again)"
        )
    if as_json:
        print_json(
            {
                "model": spec.name,
                "ref": model,
                "version": version.version,
                "rss_bytes": rss,
                "files": [str(p) for p in files],
                "notes": notes,
                "manifests": manifests,
            }
        )
        return
    for note in notes:
        err_console.print(f"[dim]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    console.print(
        f"{escape(model)} (version {version.version}): wrote {len(files)} files to "
        f"{escape(str(out))}",
        highlight=False,
    )
    for path in files:
        console.print(f"  {escape(str(path))}", highlight=False)
    console.print(
        "Next: kubectl create secret generic "
        f"{escape(store_secret)} --from-literal=MODELLOOP_STORE_URL=... ; kubectl create "
        f"secret generic {escape(tokens_secret)} --from-literal=MODELLOOP_SERVE_TOKENS=... ; "
        f"kubectl apply -f {escape(str(out))}",
        highlight=False,
        soft_wrap=True,
    )
