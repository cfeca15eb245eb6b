"""The external server's side of a round: wait for a closed group, claim, export, compute, post.

    exporter = Exporter(client, pool_id, work=lambda archive, workdir: my_aggregate(archive))
    await exporter.run()

`work` is a callable (sync or async) given the archive path and a working directory, returning
the result as a path or bytes; or a shell command, run with `{archive}`, `{output}`, `{group}`
and `{workdir}` substituted (quoted) and the same values in POOLHUB_ARCHIVE, POOLHUB_OUTPUT,
POOLHUB_GROUP, POOLHUB_WORKDIR; the command writes the result to `{output}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import shlex
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolhub_client.aio import AsyncPoolhubClient, Listener
from poolhub_client.errors import Conflict, PoolhubError, TransportError

log = logging.getLogger("poolhub_client.exporter")

WorkResult = Path | str | bytes
Work = Callable[[Path, Path], WorkResult | Awaitable[WorkResult]] | str


class WorkFailed(PoolhubError):
    default_code = "work_failed"


@dataclass
class Export:
    """What one processed group produced."""

    group: str
    result: dict[str, Any]
    archive: Path
    seconds: float
    lease_renewals: int = 0


@dataclass
class ExporterStats:
    exported: list[Export] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # group -> why (already_claimed, not_ready...)
    failed: dict[str, str] = field(default_factory=dict)


class Exporter:
    def __init__(self, client: AsyncPoolhubClient, pool: str, work: Work, *,
                 workdir: str | os.PathLike[str] | None = None, poll_interval: float = 30.0,
                 use_socket: bool = True, keep_files: bool = True,
                 progress: Callable[[str], Callable[[int, int | None], None] | None] | None = None) -> None:
        self.client = client
        self.pool = pool
        self.work = work
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="poolhub-export-"))
        self.poll_interval = poll_interval
        self.use_socket = use_socket
        self.keep_files = keep_files
        self.progress = progress
        self.stats = ExporterStats()
        self.listener: Listener | None = None  # the notification socket, once `run()` opened it
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._known: set[str] = set()

    # -- discovery ---------------------------------------------------------------------------

    def _offer(self, group_id: str) -> None:
        if group_id not in self._known:
            self._known.add(group_id)
            self._queue.put_nowait(group_id)

    async def poll_once(self) -> None:
        for group in await self.client.groups(self.pool, status="closed"):
            self._offer(str(group["id"]))

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll_once()
            except (TransportError, PoolhubError) as exc:
                log.warning("polling closed groups failed: %s", exc)
            await asyncio.sleep(self.poll_interval)

    async def _socket_forever(self) -> None:
        self.listener = self.client.listen()
        try:
            async for note in self.listener:
                if note.get("type") == "group.closed" and str(note.get("pool")) == str(self.pool):
                    self._offer(str(note.get("group")))
        except PoolhubError as exc:
            log.warning("notifications unavailable (%s); relying on polling every %.0fs", exc, self.poll_interval)

    # -- one group ---------------------------------------------------------------------------

    async def process(self, group_id: str) -> Export | None:
        """Claim, download, work, post. None when another exporter has it or it is not ready."""
        started = asyncio.get_running_loop().time()
        try:
            lease = await self.client.claim_group(group_id)
        except Conflict as exc:
            self.stats.skipped[group_id] = exc.code
            self._known.discard(group_id)  # not_ready now may be ready at the next poll
            log.info("group %s: %s", group_id, exc.code)
            return None
        folder = self.workdir / f"group-{group_id}"
        folder.mkdir(parents=True, exist_ok=True)
        bar = self.progress(f"archive {group_id[:8]}") if self.progress else None
        archive = await self.client.download_archive(group_id, lease["lease_id"], folder, progress=bar)
        output = await self._run_work(group_id, archive, folder)
        result, renewals = await self._post(group_id, lease["lease_id"], output)
        seconds = asyncio.get_running_loop().time() - started
        export = Export(group=group_id, result=dict(result), archive=archive, seconds=seconds,
                        lease_renewals=renewals)
        self.stats.exported.append(export)
        if not self.keep_files:
            shutil.rmtree(folder, ignore_errors=True)
        return export

    async def _run_work(self, group_id: str, archive: Path, folder: Path) -> Path:
        output = folder / "result.bin"
        if isinstance(self.work, str):
            await self._run_command(self.work, group_id, archive, folder, output)
            if not output.exists():
                raise WorkFailed(f"the command exited 0 but wrote no result to {output}")
            return output
        work = self.work
        if inspect.iscoroutinefunction(work):
            value = await work(archive, folder)
        else:  # the long computation runs in a thread: the socket and the event loop stay responsive
            value = await asyncio.to_thread(work, archive, folder)
            if inspect.isawaitable(value):
                value = await value
        if isinstance(value, bytes):
            await asyncio.to_thread(output.write_bytes, value)
            return output
        return Path(value)

    async def _run_command(self, command: str, group_id: str, archive: Path, folder: Path, output: Path) -> None:
        values = {"archive": str(archive), "output": str(output), "group": group_id, "workdir": str(folder)}
        quoted = {key: shlex.quote(value) for key, value in values.items()}
        line = command
        for key, value in quoted.items():
            line = line.replace("{" + key + "}", value)
        env = dict(os.environ, **{f"POOLHUB_{key.upper()}": value for key, value in values.items()})
        process = await asyncio.create_subprocess_shell(line, env=env, cwd=folder)
        code = await process.wait()
        if code != 0:
            raise WorkFailed(f"the command exited with {code}", details={"command": command})

    async def _post(self, group_id: str, lease_id: str, output: Path) -> tuple[dict[str, Any], int]:
        """Post under the lease; if it expired meanwhile, claim again and post the same result."""
        try:
            return dict(await self.client.post_result(group_id, lease_id, output)), 0
        except Conflict as exc:
            if exc.code != "lease_expired":
                raise
            log.warning("group %s: the lease expired during the work; claiming again", group_id)
        lease = await self.client.claim_group(group_id)  # already_claimed propagates: someone else has it
        return dict(await self.client.post_result(group_id, lease["lease_id"], output)), 1

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, *, max_groups: int | None = None) -> ExporterStats:
        """Process closed groups as they come (socket, and polling as a fallback) until
        `max_groups` were exported (forever when None)."""
        tasks = [asyncio.create_task(self._poll_forever())]
        if self.use_socket:
            tasks.append(asyncio.create_task(self._socket_forever()))
        try:
            while max_groups is None or len(self.stats.exported) < max_groups:
                group_id = await self._queue.get()
                try:
                    await self.process(group_id)
                except Conflict as exc:  # lost the lease to another exporter, or the group moved on
                    self.stats.skipped[group_id] = exc.code
                    self._known.discard(group_id)
                except (WorkFailed, PoolhubError) as exc:
                    self.stats.failed[group_id] = str(exc)
                    log.error("group %s failed: %s", group_id, exc)
                    self._known.discard(group_id)  # polling offers it again once the lease expires
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        return self.stats
