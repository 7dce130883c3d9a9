"""Artifact blobs over HTTP: streamed up and down, named and verified by their sha256.

An upload is streamed into the artifact store as it arrives (encrypted on the way when the store
has a key), hashed and counted: past the size limit it is cut off with 413, and a body whose
sha256 is not the one in the URL is refused with 400; only a whole, matching body is renamed into
place, so neither leaves anything behind. A download is streamed from the artifact store, which
verifies it as it reads. Memory stays bounded by the chunk size either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from modelloop.access import Role
from modelloop.artifacts import ArtifactStore
from modelloop.exceptions import InvalidInput, ModelloopError
from modelloop.server._auth import Principal, audit, require
from modelloop.server._common import json_response

__all__ = ["PayloadTooLarge", "router"]

router = APIRouter(tags=["artifacts"])

Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Editor = Annotated[Principal, Depends(require(Role.EDITOR))]

_DIGEST = re.compile(r"[0-9a-f]{64}")
_BUFFER = 1 << 20


class PayloadTooLarge(ModelloopError):
    """A request body is larger than the server accepts."""

    http_status = 413
    exit_code = 2


async def _finished(work: asyncio.Future[None]) -> None:
    """Wait for a write running on a thread. Cancelled meanwhile (a server shutting down), wait
    for it to end all the same before the cancellation goes on: the file it writes to is closed
    and removed on the way out, and must not be while it is being written."""
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        await _settled(work)
        raise


async def _settled(work: asyncio.Future[None]) -> None:
    """Wait for a write running on a thread to end, through cancellations, while another error
    is on its way out; that error supersedes the write's own, which is retrieved here so that
    it is not reported as lost."""
    while not work.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([work])
    if not work.cancelled():
        work.exception()


def _digest(value: str) -> str:
    if not _DIGEST.fullmatch(value):
        raise InvalidInput("the blob name must be its sha256: 64 lowercase hex characters")
    return value


@router.put(
    "/artifacts/blobs/{sha256}",
    summary="Upload a blob (the body) under its sha256",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def put_blob(request: Request, sha256: str, principal: Editor) -> Response:
    digest = _digest(sha256)
    limit: int = request.app.state.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput("Content-Length must be a number of bytes")
        if int(declared) > limit:
            raise PayloadTooLarge(f"the blob is larger than this server's limit of {limit} bytes")
    artifacts: ArtifactStore = request.app.state.artifacts
    loop = asyncio.get_running_loop()
    with artifacts.blob_writer(digest) as writer:
        size = 0
        buffer = bytearray()
        # One piece is hashed and written (and encrypted, with a key) off the event loop while
        # the next one is received: at most two pieces in memory.
        pending: asyncio.Future[None] | None = None
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(
                        f"the blob is larger than this server's limit of {limit} bytes"
                    )
                buffer += chunk
                if len(buffer) >= _BUFFER:
                    if pending is not None:
                        await _finished(pending)
                    pending = loop.run_in_executor(None, writer.write, bytes(buffer))
                    buffer.clear()
            if pending is not None:
                await _finished(pending)
                pending = None
        finally:
            if pending is not None:  # another error: the writer is closed on the way out
                await _settled(pending)
        await run_in_threadpool(writer.write, bytes(buffer))
        info = await run_in_threadpool(writer.commit)
    await run_in_threadpool(
        audit, request, principal, "artifact.put", "blob", digest, None, {"size": info.size}
    )
    return json_response({"digest": info.digest, "size": info.size}, status=201)


@router.get(
    "/artifacts/blobs/{sha256}",
    summary="Download a blob, verified against its sha256",
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def get_blob(request: Request, sha256: str, principal: Viewer) -> Response:
    digest = _digest(sha256)
    chunks = request.app.state.artifacts.iter_blob(digest)  # NotFound now, before any byte
    # A blob found corrupted while it streams ends the response early: the client, which
    # verifies the digest too, refuses what it got.
    return StreamingResponse(
        chunks, media_type="application/octet-stream", headers={"X-Content-SHA256": digest}
    )


@router.head("/artifacts/blobs/{sha256}", summary="Whether a blob is stored")
def head_blob(request: Request, sha256: str, principal: Viewer) -> Response:
    exists = request.app.state.artifacts.exists(_digest(sha256))
    return Response(status_code=200 if exists else 404)


@router.post("/artifacts/check", summary="Check that the server's artifact store is writable")
def check_writable(request: Request, principal: Editor) -> Response:
    request.app.state.artifacts.check_writable()
    return json_response(None)
