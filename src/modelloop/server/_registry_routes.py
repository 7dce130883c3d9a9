"""Registered models, versions, aliases and version tags.

The store audits every registry change itself, in the transaction of the change, under the
actor it is given: here the authenticated user (see :func:`~modelloop.server._common.actor`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from modelloop.access import Role
from modelloop.exceptions import Forbidden
from modelloop.server._auth import Principal, check_model, require
from modelloop.server._common import actor, json_response, store_of, write

__all__ = ["ROUTING_TAG_PREFIXES", "router"]

router = APIRouter(tags=["registry"])

Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Editor = Annotated[Principal, Depends(require(Role.EDITOR))]
Deployer = Annotated[Principal, Depends(require(Role.DEPLOYER))]

#: Version tags that steer what serves and what the loop does: setting them is a deployer's act.
ROUTING_TAG_PREFIXES = ("modelloop.loop.",)


# Values the store checks itself are typed ``Any``: a bad one gets the store's own error.


class ModelIn(BaseModel):
    name: Any
    description: Any = ""
    actor: str = "unknown"


class VersionIn(BaseModel):
    source: Any
    run_id: Any = None
    description: Any = ""
    tags: Any = None
    actor: str = "unknown"


class AliasIn(BaseModel):
    version: Any
    actor: str = "unknown"


class VersionTagsIn(BaseModel):
    tags: Any
    actor: str = "unknown"


@router.get("/models", summary="Every registered model")
def list_registered_models(request: Request, principal: Viewer) -> Response:
    models = store_of(request).list_registered_models()
    if principal.models is not None:
        models = [m for m in models if m.name in principal.models]
    return json_response(models)


@router.post("/models", summary="Create a registered model")
def create_registered_model(request: Request, body: ModelIn, principal: Editor) -> Response:
    check_model(principal, str(body.name))

    def work() -> Any:
        return store_of(request).create_registered_model(
            body.name, description=body.description, actor=actor(request, principal, body.actor)
        )

    return write(request, principal, work)


@router.get("/models/{name}", summary="A registered model with its aliases")
def get_registered_model(request: Request, name: str, principal: Viewer) -> Response:
    check_model(principal, name)
    return json_response(store_of(request).get_registered_model(name))


@router.post("/models/{name}/versions", summary="Register the next version of a model")
def create_model_version(
    request: Request, name: str, body: VersionIn, principal: Editor
) -> Response:
    check_model(principal, name)
    _check_routing_tags(principal, name, body.tags or {})

    def work() -> Any:
        return store_of(request).create_model_version(
            name,
            source=body.source,
            run_id=body.run_id,
            description=body.description,
            tags=body.tags,
            actor=actor(request, principal, body.actor),
        )

    return write(request, principal, work)


@router.get("/models/{name}/versions", summary="Every version of a model")
def list_model_versions(request: Request, name: str, principal: Viewer) -> Response:
    check_model(principal, name)
    return json_response(store_of(request).list_model_versions(name))


@router.get("/models/{name}/versions/{version}", summary="One version")
def get_model_version(request: Request, name: str, version: int, principal: Viewer) -> Response:
    check_model(principal, name)
    return json_response(store_of(request).get_model_version(name, version))


@router.patch("/models/{name}/versions/{version}/tags", summary="Merge tags into a version")
def set_model_version_tags(
    request: Request, name: str, version: int, body: VersionTagsIn, principal: Editor
) -> Response:
    check_model(principal, name)
    _check_routing_tags(principal, name, body.tags)

    def work() -> Any:
        return store_of(request).set_model_version_tags(
            name, version, body.tags, actor=actor(request, principal, body.actor)
        )

    return write(request, principal, work)


@router.get("/models/{name}/aliases/{alias}", summary="The version an alias points at")
def get_version_by_alias(request: Request, name: str, alias: str, principal: Viewer) -> Response:
    check_model(principal, name)
    return json_response(store_of(request).get_version_by_alias(name, alias))


@router.put("/models/{name}/aliases/{alias}", summary="Point an alias at a version")
def set_alias(
    request: Request, name: str, alias: str, body: AliasIn, principal: Deployer
) -> Response:
    check_model(principal, name)

    def work() -> Any:
        previous = store_of(request).set_alias(
            name, alias, body.version, actor=actor(request, principal, body.actor)
        )
        return {"previous": previous}

    return write(request, principal, work)


@router.delete("/models/{name}/aliases/{alias}", summary="Remove an alias")
def delete_alias(
    request: Request, name: str, alias: str, principal: Deployer, by: str = "unknown"
) -> Response:
    check_model(principal, name)

    def work() -> Any:
        version = store_of(request).delete_alias(name, alias, actor=actor(request, principal, by))
        return {"version": version}

    return write(request, principal, work)


def _check_routing_tags(principal: Principal, name: str, tags: Any) -> None:
    if not isinstance(tags, dict):
        return  # the store refuses it
    routing = sorted(str(k) for k in tags if str(k).startswith(ROUTING_TAG_PREFIXES))
    if routing and not principal.may(Role.DEPLOYER, name):
        raise Forbidden(f"setting the tags {routing} needs the deployer role")
