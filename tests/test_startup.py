"""`bot run` refuses to start on what it cannot run safely, with one line on stderr and a
non-zero exit, never a traceback or a hang: a blank secret (item 21), and damaged, read-only
or mismatched database files (item 15)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.clock import VirtualClock
from bot.errors import StoreUnavailable
from bot.store.db import Database, fetch_all
from bot.store.files import FileState, Identity, open_store, pairing_problem, read_state
from bot.store.integrity import CHECK_SECONDS, StoreRefused, check_file
from tests.conftest import ig_comment
from tests.test_daemon import SECRET, TOKEN, post

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
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None
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
        [*(prefix or []), sys.executable, "-m", "bot", "--config", "bot.yaml", *args],
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


# --- item 15: the database files -------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
FLOWS = f"flows_dir: {ROOT / 'flows'}\ntemplates_dir: {ROOT / 'templates'}\n"
PAGE = 4096  # SQLite's default page size, which the bot keeps


def serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    """Start `bot run ARGS` until it listens; its logs go to a file."""
    env = {
        **os.environ,
        "BOT_APP_SECRET": SECRET,
        "BOT_VERIFY_TOKEN": "verify-42",
        "BOT_TOKEN_17841400000000001": TOKEN,
    }
    with (tmp_path / "daemon.log").open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "--config", str(tmp_path / "bot.yaml"), "run", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=HANG)
        pytest.fail(f"bot run did not start: {(tmp_path / 'daemon.log').read_text()}")
    return proc, int(json.loads(line)["port"])


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=HANG)
    assert proc.returncode == 0


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A daemon's two files after it answered three PRICING comments and stopped."""
    where = tmp_path_factory.mktemp("history")
    settings(where, FLOWS)
    proc, port = serve(where)
    try:
        for i in range(3):
            assert post(port, comment(f"c{i}", f"u{i}")) == 200
    finally:
        stop(proc)
    with sqlite3.connect(where / "data" / "bot.sqlite3") as db:
        assert private_replies(db) == ["c0", "c1", "c2"]
    return where / "data"


def comment(comment_id: str, user: str) -> dict[str, Any]:
    """A PRICING comment made now: the example flow answers it with a private reply."""
    return ig_comment(comment_id, "PRICING", user=user, time_s=int(time.time()))


def private_replies(db: sqlite3.Connection) -> list[str]:
    rows = db.execute(
        "SELECT comment_id FROM outbox WHERE kind = 'private_reply' ORDER BY comment_id"
    )
    return [str(r[0]) for r in rows]


def copy_of(history: Path, tmp_path: Path) -> Path:
    """The history's files in a fresh folder of the test's own, with the settings beside."""
    shutil.copytree(history, tmp_path / "data")
    settings(tmp_path, FLOWS)
    return tmp_path / "data"


def garble(path: Path, first_page: int, pages: int) -> None:
    """Overwrite whole pages with bytes that are no SQLite page, as a bad disk or copy does."""
    junk = random.Random(first_page).randbytes(pages * PAGE)
    with path.open("r+b") as f:
        f.seek(first_page * PAGE)
        f.write(junk)


def unprivileged() -> list[str]:
    """A prefix that runs the bot where file permissions bind: as root, without the two
    capabilities that let root read and write whatever the mode says."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    prefix = [str(setpriv), "--bounding-set=-dac_override,-dac_read_search"]
    if setpriv is None or subprocess.run([*prefix, "true"], check=False).returncode:
        pytest.skip("root here, and setpriv cannot drop the capabilities that skip chmod")
    return prefix


def damage_main_middle(data: Path) -> Path:
    path = data / "bot.sqlite3"
    garble(path, path.stat().st_size // PAGE // 2, 6)
    return path


def damage_main_first_page(data: Path) -> Path:
    path = data / "bot.sqlite3"
    garble(path, 0, 1)
    return path


def truncate_main(data: Path) -> Path:
    path = data / "bot.sqlite3"
    os.truncate(path, path.stat().st_size // 2)
    return path


def damage_inbox(data: Path) -> Path:
    path = data / "bot.inbox.sqlite3"
    garble(path, 1, 2)
    return path


@pytest.mark.parametrize(
    "damage", [damage_main_middle, damage_main_first_page, truncate_main, damage_inbox]
)
def test_a_damaged_file_refuses_to_start_naming_it_and_what_to_do(
    history: Path, tmp_path: Path, damage: Callable[[Path], Path]
) -> None:
    """Six pages of garbage in the main file used to start and answer /healthz ok while
    every delivery went bad."""
    path = damage(copy_of(history, tmp_path)).relative_to(tmp_path)
    line = refusal(bot(tmp_path, "run"))
    assert line.startswith(f"bot: {path} is damaged (")
    assert line.endswith(
        "restore it from a backup, or move it away and start with `bot run --accept-new-database`"
    )


@pytest.mark.parametrize(
    ("command", "what"),
    [
        (("status",), "bot.sqlite3"),
        (("resume", "--account", "17841400000000001"), "bot.sqlite3"),
    ],
)
def test_every_command_that_opens_the_files_checks_them_the_same_way(
    history: Path, tmp_path: Path, command: tuple[str, ...], what: str
) -> None:
    damage_main_middle(copy_of(history, tmp_path))
    line = refusal(bot(tmp_path, *command))
    assert line.startswith(f"bot: data/{what} is damaged (quick_check: ")


@pytest.mark.parametrize(
    ("read_only", "named"),
    [
        (("data/bot.sqlite3", "data/bot.inbox.sqlite3"), "data/bot.sqlite3 is read-only"),
        (("data/bot.inbox.sqlite3",), "data/bot.inbox.sqlite3 is read-only"),
        (("data",), "data/bot.sqlite3: its folder data is read-only"),
    ],
)
def test_read_only_files_or_folder_refuse_at_once_without_a_traceback_or_a_hang(
    history: Path, tmp_path: Path, read_only: tuple[str, ...], named: str
) -> None:
    """They printed a traceback and hung: the store's threads outlived the failed start.
    The folder counts: SQLite writes the -wal and -shm files beside the database."""
    prefix = unprivileged()
    copy_of(history, tmp_path)
    for name in read_only:
        (tmp_path / name).chmod(0o555 if name == "data" else 0o444)
    try:
        line = refusal(bot(tmp_path, "run", prefix=prefix))
    finally:
        (tmp_path / "data").chmod(0o755)
    assert line.startswith(f"bot: {named}")
    assert "chown or chmod" in line


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


@pytest.mark.parametrize("loss", ["deleted", "emptied"])
def test_a_main_file_that_lost_its_history_refuses_and_accepting_it_answers_nothing_twice(
    history: Path, tmp_path: Path, loss: str
) -> None:
    """A deleted or empty main file beside an inbox with history started silently, and Meta's
    retry of an old comment got a second private reply."""
    data = copy_of(history, tmp_path)
    main = data / "bot.sqlite3"
    main.unlink() if loss == "deleted" else os.truncate(main, 0)
    for command in ("run", "status"):
        line = refusal(bot(tmp_path, command))
        assert line.startswith(
            "bot: data/bot.sqlite3 is new, but the inbox data/bot.inbox.sqlite3 beside it"
            " holds 3 deliveries processed with an earlier database: that history is gone"
        )
        assert "start once with `bot run --accept-new-database`" in line

    proc, port = serve(tmp_path, "--accept-new-database")
    try:
        assert post(port, comment("c1", "u1")) == 200  # Meta's retry of an answered one
        assert post(port, comment("c9", "u9")) == 200  # a new comment
    finally:
        stop(proc)
    with sqlite3.connect(main) as db:
        assert private_replies(db) == ["c9"]
        assert db.execute("SELECT count(*) FROM events").fetchone() == (4,)  # c1 once
    log = (tmp_path / "daemon.log").read_text()
    assert "marked 3 events of 3 processed deliveries as seen" in log
    assert bot(tmp_path, "status").returncode == 0  # paired now: no flag needed again


def test_an_inbox_that_was_replaced_or_lost_refuses_to_start(
    history: Path, tmp_path: Path
) -> None:
    data = copy_of(history, tmp_path)
    (data / "bot.inbox.sqlite3").unlink()
    line = refusal(bot(tmp_path, "run"))
    assert line.startswith(
        "bot: data/bot.inbox.sqlite3 is new, but data/bot.sqlite3 was used with another inbox"
    )
    # An inbox of another pair (made by `bot status` on an empty folder) in its place.
    other = tmp_path / "other"
    other.mkdir()
    settings(other)
    assert bot(other, "status").returncode == 0
    shutil.copy(other / "data" / "bot.inbox.sqlite3", data / "bot.inbox.sqlite3")
    line = refusal(bot(tmp_path, "run"))
    assert "were not used together: one was replaced, or restored from another backup" in line


# --- the checks themselves, in process ----------------------------------------------------


def made(tmp_path: Path) -> Path:
    """A main file with a few hundred pages, as migrations and a little history make it."""
    path = tmp_path / "bot.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        db.execute("CREATE INDEX t_body ON t (body)")
        db.executemany(
            "INSERT INTO t (body) VALUES (?)", [(f"row {i}" * 20,) for i in range(5000)]
        )
    db.close()
    return path


def test_check_file_passes_a_sound_file_and_one_that_does_not_exist_yet(tmp_path: Path) -> None:
    clock = VirtualClock()
    assert check_file(made(tmp_path), monotonic=clock.monotonic, budget=CHECK_SECONDS)
    assert check_file(tmp_path / "new.sqlite3", monotonic=clock.monotonic, budget=CHECK_SECONDS)
    assert not (tmp_path / "new.sqlite3").exists()  # a check never creates the file


@pytest.mark.parametrize(
    ("page", "found"),
    [(40, "quick_check: "), (0, "it does not start with SQLite's header")],
)
def test_check_file_refuses_pages_of_garbage_wherever_they_are(
    tmp_path: Path, page: int, found: str
) -> None:
    path = made(tmp_path)
    garble(path, page, 6)
    with pytest.raises(StoreRefused) as err:
        check_file(path, monotonic=VirtualClock().monotonic, budget=CHECK_SECONDS)
    assert str(err.value).startswith(f"{path} is damaged ({found}")
    assert "\n" not in str(err.value)


def test_a_check_out_of_time_starts_the_file_unchecked_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file too large to check within the budget is not refused for its size."""
    path = made(tmp_path)
    ticks = iter(range(0, 10**9, 100))  # each look at the clock: 100 s later
    assert not check_file(path, monotonic=lambda: float(next(ticks)), budget=CHECK_SECONDS)
    assert "quick_check did not finish within 60 s, so it starts unchecked" in caplog.text


def state(
    name: str,
    *,
    new: bool = False,
    own: Identity | None = None,
    partner: Identity | None = None,
    processed: int = 0,
) -> FileState:
    return FileState(Path(name), new, own, partner, processed)


A, B, C = (Identity(x, 1772449200000) for x in ("aaaa", "bbbb", "cccc"))


@pytest.mark.parametrize(
    ("main", "inbox", "problem"),
    [
        (state("m", new=True), state("i", new=True), None),  # the first start
        (state("m", own=A, partner=B), state("i", own=B, partner=A), None),
        (state("m"), state("i", processed=9), None),  # a bot from before identities
        (state("m", own=A, partner=B), state("i", own=B), None),  # a crash mid-pairing
        (state("m", new=True), state("i", processed=3), "m is new, but the inbox i beside"),
        (state("m", new=True), state("i", own=B, partner=A), "was used with an earlier"),
        (state("m", own=A, partner=B), state("i", new=True), "i is new, but m was used with"),
        (state("m", own=A, partner=B), state("i", own=C, partner=A), "were not used together"),
        (state("m", own=C, partner=B), state("i", own=B, partner=A), "were not used together"),
        (state("m", own=A, partner=B), state("i"), "were not used together"),
    ],
)
def test_two_files_go_together_only_if_neither_names_another_and_no_history_was_lost(
    main: FileState, inbox: FileState, problem: str | None
) -> None:
    found = pairing_problem(main, inbox)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in str(found)


async def test_open_store_pairs_files_from_before_identities_as_it_finds_them(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    path = tmp_path / "bot.sqlite3"
    db, inbox = await open_store(path, "NORMAL", clock=clock)
    await db.close()
    await inbox.close()
    for p in (path, tmp_path / "bot.inbox.sqlite3"):  # as an earlier version left them
        with sqlite3.connect(p) as conn:
            conn.execute("DROP TABLE store_identity")
        conn.close()
    db, inbox = await open_store(path, "NORMAL", clock=clock)
    await db.close()
    await inbox.close()
    main, box = read_state(path), read_state(tmp_path / "bot.inbox.sqlite3")
    assert main.own is not None and main.partner == box.own and box.partner == main.own


async def test_accepting_a_new_main_file_marks_every_processed_delivery_seen_and_no_other(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    path = tmp_path / "bot.sqlite3"
    db, inbox = await open_store(path, "NORMAL", clock=clock)
    async with inbox.transaction() as conn:
        await conn.executemany(
            "INSERT INTO inbox (received_at, body, state) VALUES (1, ?, ?)",
            [
                (json.dumps(ig_comment("done1", "hi")).encode(), "done"),
                (json.dumps(ig_comment("waiting", "hi")).encode(), "new"),
                (b"not json", "bad"),
            ],
        )
    await db.close()
    await inbox.close()
    path.unlink()
    with pytest.raises(StoreRefused, match="holds 2 deliveries processed"):
        await open_store(path, "NORMAL", clock=clock)
    db, inbox = await open_store(path, "NORMAL", clock=clock, accept_new=True)
    try:
        keys = await fetch_all(db.reader, "SELECT key FROM events")
    finally:
        await db.close()
        await inbox.close()
    assert [k[0] for k in keys] == ["comment:done1"]  # the waiting one is the worker's
    db, inbox = await open_store(path, "NORMAL", clock=clock)  # paired: no flag needed
    await db.close()
    await inbox.close()


async def test_opening_a_file_that_is_no_database_is_one_line_not_an_sqlite_traceback(
    tmp_path: Path,
) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not a database" * 500)
    with pytest.raises(StoreUnavailable, match=f"cannot open the database {path}: file is not"):
        await Database.open(path)
