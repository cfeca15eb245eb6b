"""`poolhub`: the command line over the SDK. Run `poolhub --help`.

Exit codes: 0 success, 1 a refused request or a failed check, 2 bad usage, 3 not logged in or
credentials refused, 4 server unreachable, 5 the simulation's checks failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import getpass
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from poolhub_client import config
from poolhub_client._core import BatchItem, Tokens
from poolhub_client.aio import AsyncPoolhubClient
from poolhub_client.client import PoolhubClient
from poolhub_client.errors import AuthError, PoolhubError, TransportError, ValidationError
from poolhub_client.exporter import Exporter
from poolhub_client.flows import TusState
from poolhub_client.outbox import Outbox
from poolhub_client.progress import ProgressBar, human
from poolhub_client.simulate import SimulationConfig, simulate


class UsageError(Exception):
    pass


def _out(text: str) -> None:
    print(text, flush=True)


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        if args.config_dir:
            os.environ["POOLHUB_CONFIG_DIR"] = args.config_dir
        self.directory = config.config_dir()
        self.store = config.CredentialStore(self.directory)
        self.url = (args.url or os.environ.get("POOLHUB_URL") or self.store.url() or config.DEFAULT_URL).rstrip("/")
        self.progress = not args.no_progress

    def _save(self, tokens: Tokens | None) -> None:
        self.store.save(url=self.url, tokens=tokens)

    def client(self, *, logged_in: bool = True) -> PoolhubClient:
        tokens = self.store.tokens()
        if logged_in and tokens is None:
            raise AuthError("not logged in: run `poolhub login` first")
        return PoolhubClient(self.url, tokens=tokens, on_tokens=self._save)

    def async_client(self) -> AsyncPoolhubClient:
        tokens = self.store.tokens()
        if tokens is None:
            raise AuthError("not logged in: run `poolhub login` first")
        return AsyncPoolhubClient(self.url, tokens=tokens, on_tokens=self._save)

    def bar(self, label: str) -> ProgressBar | None:
        return ProgressBar(label) if self.progress else None


def _pool_id(client: PoolhubClient, pool: str) -> str:
    try:
        return str(uuid.UUID(pool))
    except ValueError:
        pass
    for candidate in client.list_pools():
        if candidate.get("name") == pool:
            return str(candidate["id"])
    raise UsageError(f"no pool named {pool!r} among your pools")


def _password(env_name: str, from_stdin: bool, prompt: str) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    if os.environ.get(env_name):
        return os.environ[env_name]
    if not sys.stdin.isatty():
        raise UsageError(f"no password: set {env_name}, use --password-stdin, or run on a terminal")
    return getpass.getpass(prompt)


# -- commands --------------------------------------------------------------------------------

def cmd_login(ctx: Context, args: argparse.Namespace) -> int:
    username = args.username or os.environ.get("POOLHUB_USERNAME") or input("username: ")
    password = _password("POOLHUB_PASSWORD", args.password_stdin, f"password for {username}: ")
    with ctx.client(logged_in=False) as client:
        user = client.signup(username, password) if args.signup else client.login(username, password)
    _out(f"logged in to {ctx.url} as {user['username']} ({user['role']}); tokens saved in {ctx.store.path}")
    return 0


def cmd_logout(ctx: Context, args: argparse.Namespace) -> int:
    # Already expired or revoked: forgetting the tokens is all that is left to do.
    with ctx.client() as client, contextlib.suppress(AuthError):
        client.logout()
    ctx.store.save(url=ctx.url, tokens=None)
    _out("logged out")
    return 0


def cmd_whoami(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as client:
        session = client.validate()
    _out(f"{session['user']['username']} ({session['user']['role']}) on {ctx.url}")
    for pool in session["pools"]:
        _out(f"  {pool['id']}  {pool['name']}  {pool['role']}")
    return 0


def cmd_pools(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as client:
        for pool in client.list_pools():
            role = pool.get("role") or "not a member (admin view)"
            _out(f"{pool['id']}  {pool.get('name')}  window {pool.get('window_seconds')}s  role {role}")
    return 0


def cmd_upload(ctx: Context, args: argparse.Namespace) -> int:
    files = [Path(name) for name in args.files]
    for path in files:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    with ctx.client() as client:
        pool = _pool_id(client, args.pool)
        if args.batch:
            bar = ctx.bar(f"batch of {len(files)}")
            batch = client.upload_batch(pool, [BatchItem(file=p, timestamp=args.timestamp) for p in files],
                                        progress=bar)
            if bar:
                bar.finish()
            uploads = batch["uploads"]
        else:
            uploads = []
            for path in files:
                bar = ctx.bar(path.name)
                resumable = ResumableUploads(ctx.directory, pool, path) if args.tus or client.use_tus(path) else None
                uploads.append(client.upload(pool, path, timestamp=args.timestamp, progress=bar,
                                             tus=resumable.state if resumable else None))
                if resumable:
                    resumable.forget()
                if bar:
                    bar.finish()
    for upload in uploads:
        _out(f"{upload['id']}  {upload.get('filename')}  {human(upload.get('size', 0))}  {upload.get('status')}  "
             f"group {upload.get('group')}")
    return 0


class ResumableUploads:
    """The tus URL of a large upload in progress, kept in the config dir so that a second run of
    `poolhub upload` on the same file (same pool, path, size and mtime) goes on where the first stopped."""

    def __init__(self, directory: Path, pool: str, path: Path) -> None:
        stat = path.stat()
        self.file = directory / "resumable-uploads.json"
        self.key = f"{pool} {path.resolve()} {stat.st_size} {stat.st_mtime_ns}"
        self.state = TusState(location=self._read().get(self.key), on_location=self._keep)

    def _read(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.file.read_text()))
        except (OSError, ValueError):
            return {}

    def _write(self, urls: dict[str, str]) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.file.with_suffix(".tmp")
        partial.write_text(json.dumps(urls, indent=1))
        os.replace(partial, self.file)

    def _keep(self, url: str) -> None:
        self._write({**self._read(), self.key: url})

    def forget(self) -> None:
        urls = self._read()
        if urls.pop(self.key, None) is not None:
            self._write(urls)


def cmd_provision(ctx: Context, args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:  # the file first: the passwords exist only in the server's answer, so there must be a place for them
        handle = os.fdopen(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", newline="")
    except FileExistsError as exc:
        raise UsageError(f"{out} exists: passwords are shown once, so choose a new file") from exc
    except OSError as exc:
        raise UsageError(f"cannot create {out}: {exc.strerror}") from exc
    try:
        with ctx.client() as client:
            pool = _pool_id(client, args.pool)
            members = client.provision(pool, args.count, prefix=args.prefix, role=args.role)
        writer = csv.writer(handle)
        writer.writerow(["username", "password", "role", "pool", "url"])
        for member in members:
            writer.writerow([member["username"], member["password"], member["role"], pool, ctx.url])
        handle.close()
    except BaseException:
        handle.close()
        out.unlink(missing_ok=True)
        raise
    _out(f"{len(members)} account(s) with role {args.role} in pool {pool}; credentials in {out} "
         "(mode 0600: the only copy of the passwords)")
    return 0


def _outbox(ctx: Context, args: argparse.Namespace) -> Outbox:
    return Outbox(Path(args.outbox) if args.outbox else ctx.directory / "outbox.sqlite3",
                  max_attempts=getattr(args, "attempts", 6))


def cmd_queue(ctx: Context, args: argparse.Namespace) -> int:
    try:
        pool = str(uuid.UUID(args.pool))
    except ValueError as exc:  # offline: no server to resolve a name with
        raise UsageError("queue needs the pool's id (it works offline, without asking the server)") from exc
    with _outbox(ctx, args) as box:
        for name in args.files:
            item = box.add(pool, Path(name), timestamp=args.timestamp)
            _out(f"queued {name} ({human(item.size)}) at {item.timestamp}")
        _out(f"{box.pending()} update(s) waiting in {box.path}")
    return 0


def cmd_flush(ctx: Context, args: argparse.Namespace) -> int:
    with _outbox(ctx, args) as box, ctx.client() as client:
        if not box.pending():
            _out("nothing to send")
            return 0
        report = box.flush(client)
    _out(f"sent {report.sent} update(s) in {report.batches} batch(es); {report.rejected} rejected; "
         f"{report.pending} still queued")
    for error in report.errors:
        _err(f"  {error}")
    if report.pending:
        _err("the server could not take everything now; run `poolhub flush` again later (nothing is lost)")
        return 4
    return 1 if report.rejected else 0


def cmd_listen(ctx: Context, args: argparse.Namespace) -> int:
    after = 0 if args.from_start else args.after if args.after is not None else config.read_seq(ctx.directory)

    async def run() -> None:
        async with ctx.async_client() as client:
            listener = client.listen(after=after)
            seen = 0
            async for note in listener:
                if args.pool and str(note.get("pool")) != args.pool:
                    continue
                _out(json.dumps(note) if args.json else _describe(note))
                config.write_seq(int(note["seq"]), ctx.directory)
                seen += 1
                if args.count and seen >= args.count:
                    await listener.aclose()
                    return

    asyncio.run(run())
    return 0


def _describe(note: dict[str, Any]) -> str:
    kind = note.get("type")
    if kind == "upload.status":
        return (f"#{note['seq']} upload {note.get('upload_id')} is {note.get('status')} "
                f"(attempts {note.get('attempts')})")
    if kind == "group.closed":
        return f"#{note['seq']} group {note.get('group')} closed in pool {note.get('pool')}"
    if kind == "result.available":
        return (f"#{note['seq']} result {note.get('result_id')} for group {note.get('group')}: "
                f"{human(note.get('size') or 0)}, sha256 {note.get('sha256')}")
    return f"#{note.get('seq')} {kind}: {json.dumps(note)}"


def cmd_result(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as client:
        pool = _pool_id(client, args.pool)
        bar = ctx.bar("result")
        result, path = client.download_latest_result(pool, Path(args.out), progress=bar)
        if bar:
            bar.finish()
    _out(f"result {result['id']} of group {result.get('group')}: {path} ({human(result.get('size', 0))}, verified)")
    return 0


def cmd_export_worker(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client() as sync_client:
        pool = _pool_id(sync_client, args.pool)

    async def run() -> int:
        async with ctx.async_client() as client:
            exporter = Exporter(client, pool, args.exec, workdir=args.workdir, poll_interval=args.poll_interval,
                                use_socket=not args.no_socket,
                                progress=ctx.bar if ctx.progress else None)
            _out(f"waiting for closed groups in pool {pool} (Ctrl-C stops)")
            stats = await exporter.run(max_groups=1 if args.once else args.max_groups)
            for export in stats.exported:
                _out(f"group {export.group}: result {export.result.get('id')} posted after {export.seconds:.1f}s")
            for group, reason in stats.failed.items():
                _err(f"group {group}: {reason}")
            return 1 if stats.failed else 0

    return asyncio.run(run())


def cmd_simulate(ctx: Context, args: argparse.Namespace) -> int:
    admin_password = _password("POOLHUB_ADMIN_PASSWORD", args.admin_password_stdin, "admin password: ")
    settings = SimulationConfig(
        url=ctx.url, admin_username=args.admin_username or os.environ.get("POOLHUB_ADMIN_USERNAME") or "admin",
        admin_password=admin_password, clients=args.clients, listeners=args.listeners, offline=args.offline,
        offline_items=args.offline_items, file_size=args.size, window_seconds=args.window_seconds,
        pool_name=args.pool_name, timeout=args.timeout,
    )
    with PoolhubClient(ctx.url, max_retries=0) as probe:  # fail fast and clearly: no server, or a wrong admin
        try:
            probe.login(settings.admin_username, settings.admin_password)
        except TransportError as exc:
            raise TransportError(f"{exc.message} (is `make run` running there?)") from exc
        except AuthError as exc:
            raise AuthError(f"the admin account was refused ({exc.code}): check POOLHUB_ADMIN_USERNAME and "
                            "POOLHUB_ADMIN_PASSWORD") from exc
    report = asyncio.run(simulate(settings, say=_out))
    _out(report.table())
    return 0 if report.ok else 5


# -- parser ----------------------------------------------------------------------------------

def _size(text: str) -> int:
    units = {"kb": 1024, "mb": 1024**2, "k": 1024, "m": 1024**2, "b": 1}
    lowered = text.strip().lower()
    for suffix, factor in units.items():
        if lowered.endswith(suffix) and lowered[: -len(suffix)].strip().isdigit():
            return int(lowered[: -len(suffix)]) * factor
    if lowered.isdigit():
        return int(lowered)
    raise argparse.ArgumentTypeError(f"not a size: {text!r} (use 500KB, 2MB or bytes)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="poolhub", description="poolhub client: upload, listen, export.")
    parser.add_argument("--url", help=f"server URL (default: $POOLHUB_URL, the last one used, or "
                                      f"{config.DEFAULT_URL})")
    parser.add_argument("--config-dir", help="where tokens and the outbox live (default: $POOLHUB_CONFIG_DIR "
                        "or ~/.config/poolhub)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[Context, argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        child = sub.add_parser(name, help=text, description=text)
        child.set_defaults(handler=handler)
        return child

    login = command("login", cmd_login, "log in (or --signup) and store the tokens (file mode 0600)")
    login.add_argument("--username")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin "
                       "(default: $POOLHUB_PASSWORD, else a prompt)")
    login.add_argument("--signup", action="store_true", help="create the account first")
    command("logout", cmd_logout, "revoke the stored tokens and forget them")
    command("whoami", cmd_whoami, "who the stored tokens belong to, and their pools")
    command("pools", cmd_pools, "list your pools")

    upload = command("upload", cmd_upload, "upload files now (one request each, or --batch)")
    upload.add_argument("--pool", required=True, help="pool id or name")
    upload.add_argument("--timestamp", help="when the files were produced (ISO-8601; default now)")
    upload.add_argument("--batch", action="store_true", help="send all files as one batch")
    upload.add_argument("--tus", action="store_true", help="resumable upload whatever the size (default: files "
                        "above $POOLHUB_TUS_THRESHOLD bytes, 8 MiB); a second run on the same file resumes it")
    upload.add_argument("files", nargs="+")

    provision = command("provision", cmd_provision, "create device accounts in a pool and write their credentials "
                        "to a CSV file (the only copy of the passwords)")
    provision.add_argument("--pool", required=True, help="pool id or name")
    provision.add_argument("--count", type=int, required=True, help="how many accounts (1 to 1000)")
    provision.add_argument("--prefix", default="device", help="username prefix (default: device)")
    provision.add_argument("--role", default="contributor", choices=["contributor", "listener", "exporter", "manager"])
    provision.add_argument("--out", required=True, help="CSV file to create (refused if it exists)")

    for name, handler, text in (("queue", cmd_queue, "queue files in the offline outbox (works without a server)"),
                                ("flush", cmd_flush, "send the outbox as batches; safe to interrupt and re-run")):
        child = command(name, handler, text)
        child.add_argument("--outbox", help="outbox file (default: outbox.sqlite3 in the config dir)")
        if name == "queue":
            child.add_argument("--pool", required=True, help="pool id")
            child.add_argument("--timestamp", help="when the files were produced (ISO-8601; default now)")
            child.add_argument("files", nargs="+")
        else:
            child.add_argument("--attempts", type=int, default=6, help="tries per batch before giving up for now")

    listen = command("listen", cmd_listen, "print notifications as they come; resumes where the last run stopped")
    listen.add_argument("--pool", help="only this pool's notifications (id)")
    listen.add_argument("--after", type=int, help="replay everything after this seq")
    listen.add_argument("--from-start", action="store_true", help="replay everything there is")
    listen.add_argument("--count", type=int, help="stop after this many notifications")
    listen.add_argument("--json", action="store_true", help="one JSON object per line")

    result = command("result", cmd_result, "download the pool's latest result (sha256 verified)")
    result.add_argument("--pool", required=True)
    result.add_argument("--out", default=".", help="file or directory (default: here)")

    worker = command("export-worker", cmd_export_worker,
                     "claim closed groups, run a command on each archive, post its output as the result")
    worker.add_argument("--pool", required=True)
    worker.add_argument("--exec", required=True, metavar="CMD",
                        help="shell command; {archive} {output} {group} {workdir} are substituted (quoted) and "
                             "also set as POOLHUB_ARCHIVE etc.; it must write the result to {output}")
    worker.add_argument("--once", action="store_true", help="stop after one group")
    worker.add_argument("--max-groups", type=int)
    worker.add_argument("--workdir")
    worker.add_argument("--poll-interval", type=float, default=30.0)
    worker.add_argument("--no-socket", action="store_true", help="poll only")

    sim = command("simulate", cmd_simulate, "run a whole round with simulated clients and print a summary")
    sim.add_argument("--clients", type=int, default=50)
    sim.add_argument("--listeners", type=int, help="default: a tenth of the clients")
    sim.add_argument("--offline", type=int, help="clients sending offline batches (default: a tenth)")
    sim.add_argument("--offline-items", type=int, default=3, help="updates per offline client, one window apart")
    sim.add_argument("--size", type=_size, default=100 * 1024, help="bytes per update (e.g. 100KB, 2MB)")
    sim.add_argument("--window-seconds", type=int, default=600)
    sim.add_argument("--pool-name")
    sim.add_argument("--timeout", type=float, default=300.0)
    sim.add_argument("--admin-username", help="default: $POOLHUB_ADMIN_USERNAME or admin")
    sim.add_argument("--admin-password-stdin", action="store_true",
                     help="read it from stdin (default: $POOLHUB_ADMIN_PASSWORD, else a prompt)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its request lines are noise here
    try:
        ctx = Context(args)
        return int(args.handler(ctx, args))
    except UsageError as exc:
        _err(f"poolhub: {exc}")
        return 2
    except AuthError as exc:
        _err(f"poolhub: {exc.message} ({exc.code}); run `poolhub login`" if exc.status else f"poolhub: {exc.message}")
        return 3
    except TransportError as exc:
        _err(f"poolhub: the server is unreachable: {exc.message}")
        return 4
    except ValidationError as exc:
        details = f" {json.dumps(exc.details)}" if exc.details else ""
        _err(f"poolhub: refused: {exc.code}: {exc.message}{details}")
        return 1
    except PoolhubError as exc:
        _err(f"poolhub: {exc}")
        return 1
    except KeyboardInterrupt:
        _err("poolhub: interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
