"""Artifact store throughput with and without encryption at rest; prints one JSON line.

A file of --size-mb MiB (default 500) of random bytes is stored with ``put_file`` and read back
with ``get_file`` on a local root, once in plaintext and once AES-256-GCM encrypted. Each mode
runs in a fresh child process so that its peak RSS is its own. Figures: MB/s (MB = 10^6 bytes)
for put and get (medians of --repeat runs), and the children's peak RSS in MiB (which includes
the interpreter and its imports). On a local root both directions are mostly disk-bound.

Usage: python benchmarks/encryption.py [--size-mb 500] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, os, resource, sys, time
from modelloop.artifacts import ArtifactStore, EncryptionKey, Keyring
root, source, dest, encrypt = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
keyring = Keyring(EncryptionKey.generate()) if encrypt else Keyring()
store = ArtifactStore(root, keyring=keyring)
t0 = time.perf_counter()
info = store.put_file(source)
t1 = time.perf_counter()
store.get_file(info.digest, dest)
t2 = time.perf_counter()
rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"put_s": t1 - t0, "get_s": t2 - t1, "rss_mib": rss_kib / 1024,
                  "stored_bytes": os.path.getsize(store.blob_path(info.digest))}))
"""


def _write_source(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(size // len(block)):
            f.write(i.to_bytes(8, "big") + block[8:])  # every MiB different: no dedup inside


def _run(root: Path, source: Path, dest: Path, encrypt: bool) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(source), str(dest), "1" if encrypt else "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument(
        "--root", help="folder for the file, the store and the copy (default: temp)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode; medians reported")
    args = parser.parse_args()
    size = args.size_mb << 20

    with tempfile.TemporaryDirectory(dir=args.root) as tmp:
        base = Path(tmp)
        source = base / "source.bin"
        _write_source(source, size)
        out: dict[str, object] = {"benchmark": "encryption", "size_mib": args.size_mb}
        runs: dict[str, list[dict[str, float]]] = {"plain": [], "encrypted": []}
        for _ in range(args.repeat):  # modes alternate, so machine noise hits both alike
            for name, encrypt in (("plain", False), ("encrypted", True)):
                root, dest = base / f"store-{name}", base / f"copy-{name}.bin"
                runs[name].append(_run(root, source, dest, encrypt))
                if dest.stat().st_size != size:
                    raise SystemExit(
                        f"{name}: the copy has {dest.stat().st_size} bytes, not {size}"
                    )
                dest.unlink()
                shutil.rmtree(root)
        for name, measured in runs.items():
            put_s = statistics.median(m["put_s"] for m in measured)
            get_s = statistics.median(m["get_s"] for m in measured)
            out[f"{name}_put_mb_per_s"] = round(size / 1e6 / put_s, 1)
            out[f"{name}_get_mb_per_s"] = round(size / 1e6 / get_s, 1)
            out[f"{name}_peak_rss_mib"] = round(max(m["rss_mib"] for m in measured), 1)
            out[f"{name}_stored_bytes"] = int(measured[0]["stored_bytes"])
        out["python"] = platform.python_version()
        out["cpus"] = os.cpu_count()
        out["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
