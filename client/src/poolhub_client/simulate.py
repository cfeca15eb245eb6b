"""A whole round, simulated: many clients upload, one exporter XORs, every member gets the result.

Used by `poolhub simulate` and `make demo`. Needs an admin account (to create the pool); the
simulated members are provisioned in one call per role (`POST /pools/{pool}/members/provision`),
their passwords kept only in memory, and each logs in.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from poolhub_client.aio import AsyncPoolhubClient, Listener
from poolhub_client.archive import archive_upload_ids, xor_bytes, xor_files
from poolhub_client.client import PoolhubClient
from poolhub_client.errors import Conflict, PoolhubError
from poolhub_client.exporter import Exporter
from poolhub_client.outbox import Outbox
from poolhub_client.progress import human

log = logging.getLogger("poolhub_client.simulate")


@dataclass
class SimulationConfig:
    url: str
    admin_username: str
    admin_password: str
    clients: int = 50
    listeners: int | None = None  # default: a tenth of the clients (at least 1)
    offline: int | None = None  # default: a tenth of the clients (at least 1)
    offline_items: int = 3  # each offline client queues this many updates, one window apart
    file_size: int = 100 * 1024
    window_seconds: int = 600
    pool_name: str | None = None
    concurrency: int = 16
    timeout: float = 300.0
    workdir: Path | None = None


ROLE_OF_KIND = {"contributor": "contributor", "offline": "contributor", "exporter": "exporter"}


@dataclass
class Member:
    username: str
    role: str
    kind: str  # contributor, listener, late-listener, offline, exporter
    client: AsyncPoolhubClient
    received: dict[str, dict[str, Any]] = field(default_factory=dict)  # group -> result.available note
    verified: set[str] = field(default_factory=set)  # groups whose result was downloaded and checked
    listener: Listener | None = None


@dataclass
class SimulationReport:
    pool: str = ""
    pool_name: str = ""
    members: int = 0
    mix: str = ""
    uploads: int = 0
    bytes: int = 0
    upload_seconds: float = 0.0
    offline_queued: int = 0
    offline_held_while_down: int = 0
    groups: int = 0
    trigger_group: str = ""
    trigger_to_result: float | None = None
    trigger_to_all_members: float | None = None
    received: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        rate = self.bytes / self.upload_seconds if self.upload_seconds else 0.0
        per_second = self.uploads / self.upload_seconds if self.upload_seconds else 0.0
        rows = [
            ("pool", f"{self.pool_name} ({self.pool})"),
            ("members", f"{self.members} ({self.mix})" if self.mix else str(self.members)),
            ("uploads accepted", str(self.uploads)),
            ("bytes uploaded", human(self.bytes)),
            ("upload rate", f"{per_second:.1f} uploads/s, {human(rate)}/s"),
            ("offline updates (queued while down)", f"{self.offline_queued} ({self.offline_held_while_down} held)"),
            ("groups exported", str(self.groups)),
            ("trigger to result", _seconds(self.trigger_to_result)),
            ("trigger to last member notified", _seconds(self.trigger_to_all_members)),
            ("members who received the result", f"{self.received}/{self.members}"),
            ("status", "OK" if self.ok else f"FAILED ({len(self.problems)} problem(s))"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
        rule = "-" * max(len(line) for line in lines)
        return "\n".join([rule, *lines, rule, *(f"problem: {problem}" for problem in self.problems)])


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _payload(size: int, label: str) -> bytes:
    # A fixed, harmless header: random bytes could by chance look like a script or an executable.
    header = f"POOLHUB-SIM {label}\n".encode()
    return header + secrets.token_bytes(max(0, size - len(header)))


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


class Simulation:
    def __init__(self, config: SimulationConfig, say: Callable[[str], None] = print) -> None:
        self.config = config
        self.say = say
        self.report = SimulationReport()
        self.run_id = datetime.now(UTC).strftime("%H%M%S") + secrets.token_hex(2)
        self.members: list[Member] = []
        self.accepted: dict[str, dict[str, Any]] = {}  # upload id -> {group, data}
        self.exports: dict[str, set[str]] = {}  # group -> upload ids present in its archive
        self.limit = asyncio.Semaphore(config.concurrency)
        self.logins = asyncio.Semaphore(min(16, config.concurrency))
        self.lock = threading.Lock()
        self.workdir = config.workdir or Path(tempfile.mkdtemp(prefix="poolhub-sim-"))
        self.admin = AsyncPoolhubClient(config.url, max_retries=8)

    # -- setup ---------------------------------------------------------------------------------

    def _mix(self) -> list[str]:
        clients = self.config.clients
        listeners = self.config.listeners if self.config.listeners is not None else max(1, clients // 10)
        offline = self.config.offline if self.config.offline is not None else max(1, clients // 10)
        contributors = clients - listeners - offline
        if contributors < 1:
            raise ValueError("the mix needs at least one online contributor")
        late = listeners // 2
        return (["contributor"] * contributors + ["offline"] * offline + ["listener"] * (listeners - late)
                + ["late-listener"] * late + ["exporter"])

    async def _join(self, account: dict[str, Any], kind: str) -> Member:
        client = AsyncPoolhubClient(self.config.url, max_retries=10, max_retry_wait=90,
                                    timeout=httpx.Timeout(120.0, connect=10.0))
        async with self.logins:
            await client.login(account["username"], account["password"])
        return Member(username=account["username"], role=account["role"], kind=kind, client=client)

    async def setup(self) -> None:
        await self.admin.login(self.config.admin_username, self.config.admin_password)
        name = self.config.pool_name or f"demo-{self.run_id}"
        # A long grace: beat leaves these windows alone; the demo closes them itself, by trigger.
        pool = await self.admin.create_pool(name, window_seconds=self.config.window_seconds, grace_seconds=86400)
        self.report.pool, self.report.pool_name = pool["id"], name
        mix = self._mix()
        started = time.monotonic()
        kinds_by_role: dict[str, list[str]] = {}
        for kind in mix:
            kinds_by_role.setdefault(ROLE_OF_KIND.get(kind, "listener"), []).append(kind)
        accounts: list[tuple[dict[str, Any], str]] = []
        for role, kinds in kinds_by_role.items():
            created = await self.admin.provision(self.report.pool, len(kinds), prefix=f"sim-{self.run_id}-{role}",
                                                 role=role)
            accounts += zip(created, kinds, strict=True)
        self.say(f"pool {name}: provisioned {len(accounts)} simulated members in "
                 f"{time.monotonic() - started:.1f}s; logging them in")
        joined = await asyncio.gather(*(self._join(account, kind) for account, kind in accounts),
                                      return_exceptions=True)
        self.members = [member for member in joined if isinstance(member, Member)]
        failures = [outcome for outcome in joined if isinstance(outcome, BaseException)]
        if failures:
            raise failures[0]
        self.report.members = len(self.members)
        self.say(f"{len(self.members)} members joined in {time.monotonic() - started:.0f}s; connecting their sockets")
        counts = {kind: mix.count(kind) for kind in dict.fromkeys(mix)}
        self.report.mix = ", ".join(f"{count} {kind}" for kind, count in counts.items())

    # -- listening -----------------------------------------------------------------------------

    async def _listen(self, member: Member, after: int | None = None) -> None:
        member.listener = member.client.listen(after=after)
        async for note in member.listener:
            if note.get("type") == "result.available" and str(note.get("pool")) == self.report.pool:
                group = str(note.get("group"))
                member.received.setdefault(group, note)
                if group == self.report.trigger_group and group not in member.verified:
                    await self._verify_result(member, note)

    async def _verify_result(self, member: Member, note: dict[str, Any]) -> None:
        target = self.workdir / "results" / member.username
        async with self.limit:
            await member.client.download_result(str(note["result_id"]), target, sha256=note.get("sha256"))
        member.verified.add(str(note.get("group")))
        target.unlink(missing_ok=True)

    async def _wait_connected(self, members: list[Member], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for member in members:
            while member.listener is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if member.listener is not None:
                await asyncio.wait_for(member.listener.connected.wait(), max(0.1, deadline - time.monotonic()))

    # -- uploading -----------------------------------------------------------------------------

    def _record(self, upload: dict[str, Any], data: bytes) -> None:
        with self.lock:  # offline clients record from their threads
            self.accepted[str(upload["id"])] = {"group": str(upload.get("group")), "data": data}
            self.report.uploads += 1
            self.report.bytes += len(data)

    async def _contribute(self, member: Member, now: datetime) -> None:
        data = _payload(self.config.file_size, member.username)
        async with self.limit:
            upload = await member.client.upload(self.report.pool, data, timestamp=now,
                                                filename=f"{member.username}.bin")
        self._record(dict(upload), data)

    def _offline_round(self, member: Member, now: datetime) -> None:
        """Queue updates spanning windows while the server is 'unreachable', then flush for real."""
        box = Outbox(self.workdir / f"{member.username}.outbox.sqlite3", max_attempts=2, backoff_base=0.05)
        blobs: dict[str, bytes] = {}
        for k in range(self.config.offline_items):
            data = _payload(self.config.file_size, f"{member.username}-{k}")
            stamp = now - timedelta(seconds=k * self.config.window_seconds)
            blobs[box.add(self.report.pool, data, timestamp=stamp, filename=f"update-{k}.bin").sha256] = data
        with PoolhubClient(_closed_port(), max_retries=0) as offline:
            held = box.flush(offline).pending
        with self.lock:
            self.report.offline_queued += len(blobs)
            self.report.offline_held_while_down += held
        with PoolhubClient(self.config.url, token_state=member.client.state, max_retries=8) as online:
            report = box.flush(online)
        if report.pending or report.rejected:
            self.report.problems.append(f"{member.username}: outbox left {report.pending} queued, "
                                        f"{report.rejected} rejected: {report.errors}")
        for item in box.items("sent"):
            self._record({"id": item.upload_id, "group": None}, blobs[item.sha256])
        box.close()

    async def upload_all(self) -> None:
        now = datetime.now(UTC)
        started = time.monotonic()
        tasks = [self._contribute(m, now) for m in self.members if m.kind == "contributor"]
        tasks += [asyncio.to_thread(self._offline_round, m, now) for m in self.members if m.kind == "offline"]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        self.report.upload_seconds = time.monotonic() - started
        for outcome in results:
            if isinstance(outcome, BaseException):
                self.report.problems.append(f"an upload failed: {outcome}")
        self.say(f"{self.report.uploads} uploads accepted ({human(self.report.bytes)}) in "
                 f"{self.report.upload_seconds:.1f}s; waiting until every one is stored")

    async def wait_stored(self) -> None:
        deadline = time.monotonic() + self.config.timeout
        while True:
            uploads = {u["id"]: u async for u in self.admin.iter_uploads(pool=self.report.pool)}
            for upload_id, info in self.accepted.items():
                if upload_id in uploads:
                    info["group"] = str(uploads[upload_id].get("group"))
            states = [uploads.get(upload_id, {}).get("status") for upload_id in self.accepted]
            if all(state in {"stored", "failed"} for state in states):
                failed = [i for i in self.accepted if uploads[i].get("status") == "failed"]
                if failed:
                    self.report.problems.append(f"{len(failed)} upload(s) failed to store: {failed[:5]}")
                return
            if time.monotonic() > deadline:
                self.report.problems.append("uploads were not all stored in time")
                return
            await asyncio.sleep(0.5)

    # -- the round -----------------------------------------------------------------------------

    def _aggregate(self, archive: Path, folder: Path) -> Path:
        group = folder.name.removeprefix("group-")
        self.exports[group] = archive_upload_ids(archive)
        return xor_files(archive, folder / "result.bin")

    async def run_round(self) -> None:
        exporter_member = next(m for m in self.members if m.kind == "exporter")
        exporter = Exporter(exporter_member.client, self.report.pool, self._aggregate,
                            workdir=self.workdir / "export", poll_interval=2.0)
        groups = sorted({info["group"] for info in self.accepted.values()})
        exporter_task = asyncio.create_task(exporter.run(max_groups=len(groups)))
        current = max((g for g in await self.admin.groups(self.report.pool) if g["id"] in groups),
                      key=lambda g: g["window_start"])
        self.report.trigger_group = current["id"]
        for group_id in groups:  # older windows first: the current one is the round's trigger
            if group_id != current["id"]:
                await self._close(group_id)
        self.say(f"trigger: closing group {current['id']} ({len(groups)} group(s) to export)")
        triggered = time.monotonic()
        await self._close(current["id"])
        online = [m for m in self.members if m.kind != "late-listener"]
        deadline = triggered + self.config.timeout
        while time.monotonic() < deadline:
            if self.report.trigger_to_result is None and any(e.group == current["id"] for e in exporter.stats.exported):
                self.report.trigger_to_result = time.monotonic() - triggered
            if exporter_task.done() and all(current["id"] in m.verified for m in online):
                self.report.trigger_to_all_members = time.monotonic() - triggered
                break
            await asyncio.sleep(0.05)
        if not exporter_task.done():
            exporter_task.cancel()
            self.report.problems.append(f"the exporter did not finish in time: {exporter.stats}")
        elif exporter_task.exception() is not None:
            self.report.problems.append(f"the exporter failed: {exporter_task.exception()}")
        self.report.groups = len(exporter.stats.exported)
        self.results = {e.group: e.result for e in exporter.stats.exported}

    async def _close(self, group_id: str) -> None:
        with contextlib.suppress(Conflict):  # already closed (by beat, or a close policy): a trigger too
            await self.admin.close_group(group_id)

    async def late_members(self) -> None:
        """Members that were offline when the result arrived: they catch up with `resume`."""
        late = [m for m in self.members if m.kind == "late-listener"]
        tasks = [asyncio.create_task(self._listen(m, after=0)) for m in late]
        deadline = time.monotonic() + min(60.0, self.config.timeout)
        while time.monotonic() < deadline and not all(self.report.trigger_group in m.verified for m in late):
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def check(self) -> None:
        for upload_id, info in self.accepted.items():
            if upload_id not in self.exports.get(info["group"], set()):
                self.report.problems.append(f"accepted upload {upload_id} is missing from the export of "
                                            f"group {info['group']}")
        trigger = self.report.trigger_group
        expected = xor_bytes([i["data"] for i in self.accepted.values() if i["group"] == trigger])
        result = getattr(self, "results", {}).get(trigger)
        if result is not None and result.get("sha256") != hashlib.sha256(expected).hexdigest():
            self.report.problems.append("the result is not the XOR of the group's uploads")
        missing = [m.username for m in self.members if trigger not in m.verified]
        self.report.received = len(self.members) - len(missing)
        if missing:
            self.report.problems.append(f"{len(missing)} member(s) did not get the result: {missing[:5]}")

    async def run(self) -> SimulationReport:
        listen_tasks: list[asyncio.Task[None]] = []
        try:
            await self.setup()
            online = [m for m in self.members if m.kind != "late-listener"]
            listen_tasks = [asyncio.create_task(self._listen(m)) for m in online]
            await self._wait_connected(online, 60)
            await self.upload_all()
            await self.wait_stored()
            await self.run_round()
            await self.late_members()
            self.check()
        finally:
            for task in listen_tasks:
                task.cancel()
            await asyncio.gather(*listen_tasks, return_exceptions=True)
            for member in self.members:
                await member.client.aclose()
            await self.admin.aclose()
            if self.config.workdir is None:
                shutil.rmtree(self.workdir, ignore_errors=True)
        return self.report


async def simulate(config: SimulationConfig, say: Callable[[str], None] = print) -> SimulationReport:
    simulation = Simulation(config, say)
    try:
        return await simulation.run()
    except PoolhubError as exc:
        simulation.report.problems.append(f"the simulation stopped: {exc}")
        return simulation.report
