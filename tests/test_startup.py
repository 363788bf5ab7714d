"""`bot run` refuses to start on what it cannot run safely, with one line on stderr and a
non-zero exit, never a traceback or a hang: a blank secret (item 21), and damaged, read-only
or mismatched database files (item 15)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.errors import StoreUnavailable
from bot.store.db import Database
from tests.test_daemon import SECRET, TOKEN

ROOT = Path(__file__).resolve().parent.parent
# A guard against a hang, not a measure of speed: a refusal exits as soon as it is printed.
HANG = 30


def settings(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "bot.yaml"
    path.write_text(
        "accounts:\n"
        '  - {id: "17841400000000001", platform: instagram, graph_base_url: "http://127.0.0.1:9"}\n'
        "listen: {host: 127.0.0.1, port: 0}\n"
        "database: {path: data/bot.sqlite3}\n" + extra
    )
    return path


def bot(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `bot --config bot.yaml ARGS` to its end (`bot run` here only ever refuses)."""
    full = {
        **os.environ,
        "BOT_APP_SECRET": SECRET,
        "BOT_VERIFY_TOKEN": "verify-42",
        "BOT_TOKEN_17841400000000001": TOKEN,
        **(env or {}),
    }
    if not (tmp_path / "bot.yaml").exists():
        settings(tmp_path)
    return subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(tmp_path / "bot.yaml"), *args],
        cwd=tmp_path,
        env=full,
        capture_output=True,
        text=True,
        timeout=HANG,
    )


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refusal prints; nothing else on stdout (no "ready" line)."""
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bot: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("value", ["", " ", "\n"])
def test_bot_run_with_a_blank_app_secret_exits_at_once_with_one_line(
    tmp_path: Path, value: str
) -> None:
    line = refusal(bot(tmp_path, "run", env={"BOT_APP_SECRET": value}))
    assert "'app_secret' is empty: the environment variable BOT_APP_SECRET is set but" in line


def test_bot_run_names_every_missing_secret_in_one_start(tmp_path: Path) -> None:
    env = {k: "" for k in ("BOT_APP_SECRET", "BOT_VERIFY_TOKEN", "BOT_TOKEN_17841400000000001")}
    result = bot(tmp_path, "run", env=env)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith("bot: ") for line in lines)
    for name in ("BOT_APP_SECRET", "BOT_VERIFY_TOKEN", "BOT_TOKEN_17841400000000001"):
        assert sum(name in line for line in lines) == 1


def test_a_start_that_fails_after_the_store_opened_exits_instead_of_hanging(
    tmp_path: Path,
) -> None:
    """aiohttp left the store open when a later start-up step failed (here, a broken flow):
    its aiosqlite threads kept the process alive after the error, until it was killed."""
    settings(tmp_path, f"flows_dir: flows\ntemplates_dir: {ROOT / 'templates'}\n")
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "broken.yaml").write_text("steps: [\n")
    result = bot(tmp_path, "run")
    assert result.returncode == 2 and result.stdout == ""
    assert "flows/broken.yaml:2:1" in result.stderr and "Traceback" not in result.stderr


async def test_opening_a_file_that_is_no_database_is_one_line_not_an_sqlite_traceback(
    tmp_path: Path,
) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not a database" * 500)
    with pytest.raises(StoreUnavailable, match=f"cannot open the database {path}: file is not"):
        await Database.open(path)
