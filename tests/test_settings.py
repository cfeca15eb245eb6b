"""Settings: every one the code reads is defined and documented, and importing them has no side effects."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from poolhub.launcher import ensure_local_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
SERVER_DIRS = ("accounts", "batching", "notifications", "uploads", "poolhub")
ENV_READ = re.compile(r"""env_(?:str|int|bool|list|optional)\(\s*["']([A-Z0-9_]+)["']""")
LAUNCHER_READ = re.compile(r"""env\.get\(\s*["']([A-Z0-9_]+)["']""")


def server_sources() -> list[Path]:
    files = [BASE_DIR / "celery_app.py"]
    for name in SERVER_DIRS:
        files += [path for path in (BASE_DIR / name).rglob("*.py") if "migrations" not in path.parts]
    return files


def test_every_setting_the_code_reads_is_defined_in_settings() -> None:
    read = {name for path in server_sources()
            for name in re.findall(r"\bsettings\.([A-Z][A-Z0-9_]+)", path.read_text())}
    assert read, "found no settings reads: the scan is broken"
    assert sorted(name for name in read if not hasattr(settings, name)) == []


def test_no_setting_is_read_with_a_silent_default() -> None:
    offenders = [f"{path.relative_to(BASE_DIR)}" for path in server_sources()
                 if re.search(r"getattr\(\s*settings\s*,", path.read_text())]
    assert offenders == []


def test_every_environment_variable_is_documented() -> None:
    names = set(ENV_READ.findall((BASE_DIR / "poolhub" / "settings.py").read_text()))
    names |= set(LAUNCHER_READ.findall((BASE_DIR / "poolhub" / "launcher.py").read_text()))
    assert "POOLHUB_STORE_MAX_ATTEMPTS" in names
    documented = (BASE_DIR / "docs" / "configuration.md").read_text()
    assert sorted(name for name in names if f"`{name}`" not in documented) == []


def import_settings(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items()
             if key not in {"SECRET_KEY", "POOLHUB_PRODUCTION", "POOLHUB_FAST_PASSWORD_HASHER"}}
    return subprocess.run([sys.executable, "-c", "import poolhub.settings"], cwd=BASE_DIR,
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_importing_settings_writes_nothing(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    result = import_settings({"POOLHUB_VAR_DIR": str(var_dir)})
    assert result.returncode == 0, result.stderr
    assert not var_dir.exists()


def test_fast_password_hasher_is_refused_in_production(tmp_path: Path) -> None:
    result = import_settings({"POOLHUB_VAR_DIR": str(tmp_path), "POOLHUB_PRODUCTION": "1",
                              "SECRET_KEY": "x" * 50, "POOLHUB_FAST_PASSWORD_HASHER": "1"})
    assert result.returncode != 0
    assert "POOLHUB_FAST_PASSWORD_HASHER" in result.stderr


def test_production_without_a_secret_key_is_refused(tmp_path: Path) -> None:
    result = import_settings({"POOLHUB_VAR_DIR": str(tmp_path), "POOLHUB_PRODUCTION": "1"})
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_the_launcher_keeps_one_private_key_per_checkout(tmp_path: Path) -> None:
    path = ensure_local_secret_key(tmp_path / "var")
    key = path.read_text()
    assert len(key) >= 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_local_secret_key(tmp_path / "var").read_text() == key
