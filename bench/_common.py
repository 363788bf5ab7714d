"""Helpers shared by the benches: paths, ports, settings files, the daemon as a process, RSS."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECRET = "bench-app-secret"
IG_ACCOUNT = "17841400000000001"
IG_TOKEN = "bench-ig-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bot_settings(
    db: Path, graph_url: str, *, port: int = 0, log_level: str = "WARNING"
) -> dict[str, Any]:
    """One Instagram account on the simulator, the example flows and templates."""
    return {
        "app_secret": SECRET,
        "verify_token": "bench-verify-token",
        "listen": {"host": "127.0.0.1", "port": port},
        "database": {"path": str(db)},
        "flows_dir": str(ROOT / "flows"),
        "templates_dir": str(ROOT / "templates"),
        "log": {"level": log_level},
        "accounts": [
            {
                "id": IG_ACCOUNT,
                "platform": "instagram",
                "name": "bench_creator",
                "token": IG_TOKEN,
                "graph_base_url": graph_url,
            }
        ],
    }


def write_settings(path: Path, settings: dict[str, Any]) -> Path:
    path.write_text(json.dumps(settings, indent=2))  # JSON is YAML
    return path


def rss_mb(pid: int | None = None) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB of a process, from /proc: current and peak resident memory."""
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return (
        int(fields["VmRSS"].split()[0]) / 1024,
        int(fields["VmHWM"].split()[0]) / 1024,
    )


class Daemon:
    """`python -m bot --config FILE run` as a child process; ready when it prints its line."""

    def __init__(
        self, config: Path, log: Path, *, preexec_fn: Callable[[], None] | None = None
    ) -> None:
        self.config = config
        self.log = log
        self.preexec_fn = preexec_fn  # e.g. a lower open-file limit (bench/idle.py)
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self, within: float = 120.0) -> float:
        """Spawn and wait for the ready line; returns the seconds it took."""
        started = time.monotonic()
        err = self.log.open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "--config",
                str(self.config),
                "run",
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                preexec_fn=self.preexec_fn,
            )
        finally:
            err.close()
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if not line:
            await self.reap()
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the daemon exited before ready:\n{tail}")
        self.port = int(json.loads(line)["port"])
        return time.monotonic() - started

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self, within: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.terminate()
        return await asyncio.wait_for(self.reap(), within)

    async def kill(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.kill()
        await self.reap()

    async def reap(self) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        await self.proc.stdout.read()
        return await self.proc.wait()
