"""Who owns a run (host, process), and whether that owner is still there.

A run records the process that started it: the host name, the pid and a *process key* that tells
this process apart from a later one reusing its pid. On Linux the key is
``<boot id>/<pid namespace>/<start time in clock ticks>``; elsewhere it is empty.

Judging a RUNNING run (:func:`is_stale`):

* on the same machine (same host name, and on Linux the same boot and pid namespace), the owner
  process decides: the run is stale as soon as its pid is gone, a zombie, or reused by a process
  started at another time; while the owner lives, the run is not stale however old its heartbeat;
* otherwise (another host, another container, a run without an owner) the heartbeat decides: the
  run is stale when its last heartbeat (or its start, if it never sent one) is older than
  :data:`STALE_AFTER_MS`. A live owner refreshes it every :data:`HEARTBEAT_INTERVAL_S` seconds.
"""

from __future__ import annotations

import functools
import os
import socket
import sys

from modelloop.store._records import RunOwner

__all__ = ["HEARTBEAT_INTERVAL_S", "STALE_AFTER_MS", "current_owner", "is_stale"]

#: How often an open run's owner refreshes its heartbeat.
HEARTBEAT_INTERVAL_S = 30.0
#: A run whose owner cannot be checked directly is stale after this long without a heartbeat
#: (ten missed beats: a busy database or a short network outage does not kill a run).
STALE_AFTER_MS = 300_000


@functools.cache
def _host() -> str:
    return socket.gethostname()[:256] or "unknown"


@functools.cache
def _machine_key() -> str:
    """``<boot id>/<pid namespace>`` on Linux: processes with the same key see the same pids.
    Empty where it cannot be read."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")  # e.g. "pid:[4026531836]"
    except OSError:
        return ""
    return f"{boot}/{namespace}"


def _process_start(pid: int) -> tuple[str, bool] | None:
    """The start time of ``pid`` in clock ticks since boot and whether it is a zombie; None when
    there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except FileNotFoundError:
        return None
    except OSError:  # e.g. hidden by hidepid: cannot tell, assume it runs
        return ("", False)
    # The command name (field 2) is in parentheses and may contain spaces or ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return ("", False)
    return fields[19], fields[0] == "Z"  # fields 22 (starttime) and 3 (state) of proc(5)


_OWNER: RunOwner | None = None


def current_owner() -> RunOwner:
    """This process as the owner of runs it starts (read once per process: a forked child
    reads its own)."""
    global _OWNER
    pid = os.getpid()
    owner = _OWNER
    if owner is None or owner.pid != pid:
        key = _machine_key()
        if key:
            found = _process_start(pid)
            key = f"{key}/{found[0]}" if found and found[0] else ""
        owner = _OWNER = RunOwner(host=_host(), pid=pid, process_key=key)
    return owner


def _local_owner_alive(owner_pid: int, process_key: str) -> bool | None:
    """Whether the owner process lives, if this machine can tell; None when it cannot."""
    machine = _machine_key()
    if machine:
        if not process_key.startswith(machine + "/"):
            return None  # another boot or another pid namespace: its pids mean nothing here
        found = _process_start(owner_pid)
        if found is None:
            return False
        start, zombie = found
        expected = process_key[len(machine) + 1 :]
        return not zombie and (not start or start == expected)
    if process_key or sys.platform == "win32":
        return None  # recorded on Linux but read elsewhere; or no signal-0 probe (Windows)
    try:
        os.kill(owner_pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def is_stale(
    *,
    owner_host: str | None,
    owner_pid: int | None,
    process_key: str | None,
    last_seen: int,
    now: int,
    stale_after_ms: int = STALE_AFTER_MS,
) -> bool:
    """Whether a RUNNING run has lost its owner (rules in this module's docstring).

    ``last_seen`` is the run's last heartbeat, or its start time when it never sent one.
    """
    if owner_host is not None and owner_pid is not None and owner_host == _host():
        alive = _local_owner_alive(owner_pid, process_key or "")
        if alive is not None:
            return not alive
    return now - last_seen > stale_after_ms
