"""The tus Node server baseline: `@tus/server` + `@tus/file-store`, installed with npm into a cache folder.

Installed only when `node` (>= 20.19, what @tus/server 2 needs) and `npm` are on PATH; otherwise
`command()` says why and the figures leave the tus Node column out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PACKAGES = ("@tus/server@2.4.5", "@tus/file-store@2.1.1")
MIN_NODE = (20, 19)
SCRIPT = Path(__file__).resolve().parent / "server.mjs"


def cache_dir() -> Path:
    """BENCH_CACHE, else ~/.cache/poolhub-bench: kept between runs, so npm runs once."""
    return Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "poolhub-bench") / "tus-node"


def _node_version(node: str) -> tuple[int, ...]:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    return tuple(int(part) for part in out.lstrip("v").split(".")[:2] if part.isdigit())


def command(port: int, upload_dir: Path) -> tuple[list[str] | None, str]:
    """(the command that serves tus on 127.0.0.1:port, a note for the report); (None, why) without node/npm."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None, "tus Node server not measured: `node` and `npm` are not both on PATH"
    if _node_version(node) < MIN_NODE:
        return None, f"tus Node server not measured: @tus/server 2 needs node >= {'.'.join(map(str, MIN_NODE))}"
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / ("installed-" + "-".join(p.replace("/", "_") for p in PACKAGES))
    if not stamp.exists():
        result = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(folder), *PACKAGES],
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            return None, f"tus Node server not measured: npm install failed: {result.stderr.strip()[-300:]}"
        stamp.touch()
    shutil.copy(SCRIPT, folder / SCRIPT.name)  # ES modules resolve packages next to the script
    upload_dir.mkdir(parents=True, exist_ok=True)
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    return ([node, str(folder / SCRIPT.name), str(port), str(upload_dir)],
            f"tus Node server: {' + '.join(PACKAGES)} on node {version}, installed by the bench with npm into {folder}")
