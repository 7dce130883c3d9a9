"""Connections to a modelloop server: bearer token, TLS verification, bounded retries, and the
server's JSON errors turned back into modelloop's exceptions.

JSON calls (every store method: small bodies, read whole) go over kept-alive connections of the
standard library's :mod:`http.client`, one request written with one send: half the client time
of an HTTP stack with request and response models, which would cost about as much per call as
the server spends on it. Blob uploads and downloads (streamed bodies) use an
:class:`httpx.Client`. Both verify certificates with the same SSL context.
"""

from __future__ import annotations

import http.client
import os
import random
import select
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from modelloop import exceptions as errors
from modelloop.exceptions import InvalidInput, ModelloopError, StoreError
from modelloop.store._http._codec import API_PREFIX, KEY_HEADER, dumps, loads

__all__ = ["API_PREFIX", "Transport"]

_RETRY_STATUS = frozenset({502, 503, 504})
_ATTEMPTS = 5
_BACKOFF_S = 0.1
# Error kinds the server sends that are not classes of modelloop.exceptions.
_EXTRA_KINDS: dict[str, type[ModelloopError]] = {
    "PayloadTooLarge": InvalidInput,
    "MethodNotAllowed": InvalidInput,
}


class Transport:
    """HTTP(S) to one server over pooled, kept-alive connections; thread-safe.

    Requests that fail to connect, lose their connection, or get 502/503/504 are retried a
    bounded number of times with backoff; writes are retried only because each carries an
    ``Idempotency-Key`` the server deduplicates on. Certificates are verified by default;
    ``ca_bundle`` names a PEM file of a private CA to trust.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ca_bundle: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise InvalidInput(f"a modelloop server URL starts with http:// or https://: {url!r}")
        self.url = url.rstrip("/")
        if ca_bundle:
            if not os.path.isfile(ca_bundle):
                raise InvalidInput(f"MODELLOOP_CA_BUNDLE {ca_bundle!r} is not a file")
            verify = ssl.create_default_context(cafile=ca_bundle)
        else:
            verify = httpx.create_ssl_context()  # what httpx verifies with by default
        headers = {"User-Agent": "modelloop-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url + API_PREFIX,
            headers=headers,
            verify=verify,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            follow_redirects=False,
        )
        self._pool = _Connections(self.url, verify, timeout_s)
        self._base = urlsplit(self.url).path.rstrip("/") + API_PREFIX
        self._headers = headers

    def __repr__(self) -> str:  # never the token
        return f"Transport({self.url!r})"

    def close(self) -> None:
        self._http.close()
        self._pool.close()

    # -- requests --------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET ``path`` and return the decoded JSON."""
        return loads(self._call("GET", path, None, {}, params))

    def write(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """A write with a fresh idempotency key (kept across its retries); the decoded JSON."""
        headers = {KEY_HEADER: uuid.uuid4().hex, "Content-Type": "application/json"}
        try:
            content = dumps(body) if body is not None else b"{}"
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"cannot send this to the server as JSON: {exc}") from None
        answer = self._call(method, path, content, headers, params)
        return loads(answer) if answer else None

    def _call(
        self,
        method: str,
        path: str,
        content: bytes | None,
        headers: Mapping[str, str],
        params: Mapping[str, Any] | None,
    ) -> bytes:
        """One JSON call with the retries of :meth:`send`; the body of its answer."""
        query = _params(params)
        target = self._base + path + (f"?{urlencode(query, doseq=True)}" if query else "")
        all_headers = {**self._headers, **headers}
        attempt = 0
        while True:
            attempt += 1
            try:
                status, answer = self._pool.request(method, target, content, all_headers)
            except (OSError, http.client.HTTPException) as e:
                if _is_tls_failure(e) or attempt >= _ATTEMPTS:
                    raise self._unreachable(e) from None
            else:
                if status not in _RETRY_STATUS or attempt >= _ATTEMPTS:
                    if status >= 400:
                        raise _error(status, answer)
                    return answer
            time.sleep(_BACKOFF_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))

    def send(
        self,
        method: str,
        path: str,
        *,
        content: bytes | Callable[[], Any] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        ok: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send with retries; raise the mapped error for an error status not in ``ok``.

        ``content`` may be a callable returning a fresh body per attempt (an open file)."""
        attempt = 0
        while True:
            attempt += 1
            body = content() if callable(content) else content
            try:
                response = self._http.request(
                    method, path, content=body, headers=headers, params=params
                )
            except httpx.TransportError as exc:
                if _is_tls_failure(exc) or attempt >= _ATTEMPTS:
                    raise self._unreachable(exc) from None
            else:
                if response.status_code not in _RETRY_STATUS or attempt >= _ATTEMPTS:
                    if response.status_code >= 400 and response.status_code not in ok:
                        raise error_from(response)
                    return response
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
            time.sleep(_BACKOFF_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))

    @contextmanager
    def stream(self, path: str) -> Iterator[httpx.Response]:
        """A streamed GET (connection attempts retried); raises the mapped error on failure."""
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._http.stream("GET", path) as response:
                    if response.status_code in _RETRY_STATUS and attempt < _ATTEMPTS:
                        pass
                    else:
                        if response.status_code >= 400:
                            response.read()
                            raise error_from(response)
                        yield response
                        return
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if _is_tls_failure(exc) or attempt >= _ATTEMPTS:
                    raise self._unreachable(exc) from None
            except httpx.TransportError as exc:
                raise StoreError(
                    f"the download {path} from {self.url} broke off ({type(exc).__name__}); the "
                    "server ends a download this way when it finds the stored blob corrupted"
                ) from None
            time.sleep(_BACKOFF_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))

    def _unreachable(self, exc: Exception) -> StoreError:
        if _is_tls_failure(exc):
            return StoreError(
                f"cannot verify the TLS certificate of the modelloop server {self.url}: {exc}. "
                "If it is signed by a private CA, set MODELLOOP_CA_BUNDLE to that CA's PEM file"
            )
        return StoreError(
            f"cannot reach the modelloop server {self.url}: {type(exc).__name__}: {exc}"
        )


class _Connections:
    """Kept-alive :mod:`http.client` connections to one server: a caller takes an idle one (or
    opens one), makes one request and gives it back. Thread-safe; at most ``max_idle`` wait.

    A connection idle for a while may have been closed by the server (its keep-alive timeout):
    it is checked before reuse, and a request that finds a reused connection closed is sent
    again at once on a new one (every write carries an idempotency key, so that is safe)."""

    #: idle seconds after which a connection is checked before it is reused
    _CHECK_AFTER_S = 0.5

    def __init__(
        self, url: str, context: ssl.SSLContext, timeout_s: float, max_idle: int = 32
    ) -> None:
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._context = context
        self._timeout_s = timeout_s
        self._max_idle = max_idle
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []
        self._lock = threading.Lock()

    def _open(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._https:
            conn = _HTTPSConnection(
                self._host, self._port, timeout=_CONNECT_TIMEOUT_S, context=self._context
            )
        else:
            conn = _HTTPConnection(self._host, self._port, timeout=_CONNECT_TIMEOUT_S)
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(self._timeout_s)
        return conn

    def _take(self) -> http.client.HTTPConnection | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn, since = self._idle.pop()
            if time.monotonic() - since < self._CHECK_AFTER_S or _still_open(conn):
                return conn
            conn.close()

    def request(
        self, method: str, target: str, body: bytes | None, headers: Mapping[str, str]
    ) -> tuple[int, bytes]:
        """(status, body) of one request."""
        conn = self._take()
        reused = conn is not None
        while True:
            if conn is None:
                conn = self._open()
            try:
                conn.request(method, target, body=body, headers=dict(headers))
                response = conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if reused and isinstance(e, _CLOSED_ERRORS):
                    conn, reused = None, False  # closed while idle: once more on a new one
                    continue
                raise
            break
        if response.will_close:
            conn.close()
        else:
            with self._lock:
                if len(self._idle) < self._max_idle:
                    self._idle.append((conn, time.monotonic()))
                    conn = None
            if conn is not None:
                conn.close()
        return response.status, answer

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()


class _OneWrite:
    """Sends a request's head and a body given as bytes in one write (:mod:`http.client` writes
    them apart: one more system call, and one more packet for the server to wait on)."""

    _buffer: list[bytes]
    send: Callable[[bytes], None]  # http.client's

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if not isinstance(message_body, bytes) or encode_chunked:
            super()._send_output(message_body, encode_chunked)  # type: ignore[misc]
            return
        self._buffer.extend((b"", b""))
        head = b"\r\n".join(self._buffer)
        del self._buffer[:]
        self.send(head + message_body)


class _HTTPConnection(_OneWrite, http.client.HTTPConnection):  # type: ignore[misc]
    pass


class _HTTPSConnection(_OneWrite, http.client.HTTPSConnection):  # type: ignore[misc]
    pass


_CONNECT_TIMEOUT_S = 10.0
_CLOSED_ERRORS = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection is still usable: nothing to read on it (a closed one reads as
    end of file, which select reports as readable)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _params(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not params:
        return None
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else value
    return out


def error_from(response: httpx.Response) -> ModelloopError:
    """The modelloop exception a server's error response stands for."""
    return _error(response.status_code, response.content)


def _error(status: int, content: bytes) -> ModelloopError:
    kind, message = "", ""
    try:
        body = loads(content)
        kind, message = str(body.get("error", "")), str(body.get("message", ""))
    except (ValueError, AttributeError):
        pass
    cls = _EXTRA_KINDS.get(kind) or getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, ModelloopError)):
        cls = _by_status(status)
    text = message or f"the server answered {status}"
    return cls(text)


def _by_status(status: int) -> type[ModelloopError]:
    return {
        400: InvalidInput,
        401: errors.Unauthorized,
        403: errors.Forbidden,
        404: errors.NotFound,
        409: errors.Conflict,
        413: InvalidInput,
        422: InvalidInput,
    }.get(status, StoreError)
