"""Shared fixtures: a real mosquitto broker, started per test."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from twin.live.telemetry import Link, Reason, Rejected, Sample, Telemetry

#: Debian's Chromium, driven by Playwright (no browser download), with the flags every browser
#: test uses.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium() -> None:
    """Fail (not skip) with what to install when Chromium is missing."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make test does, as root)")


def launch_chromium(playwright: Any) -> Any:
    """Headless Chromium from a ``sync_playwright()`` context."""
    require_chromium()
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)


@contextlib.asynccontextmanager
async def running(source: Any) -> AsyncIterator[asyncio.Task[Any]]:
    """``source.run()`` as a task for the block, cancelled after it (an adapter under test)."""
    task = asyncio.create_task(source.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def unreadable_files(tmp: Path, key: str) -> list[tuple[Path, str]]:
    """A missing file and one that is not UTF-8 (its first field ``key``), each with the message
    the file readers give for it (``scenes.fields.read_text``)."""
    bad = tmp / "latin1.yaml"
    bad.write_bytes(f"{key}: caf\xe9\n".encode("latin-1"))
    return [
        (tmp / "missing.yaml", "No such file or directory"),
        (bad, "not UTF-8 text: invalid continuation byte"),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """A real mosquitto on a free loopback port, with persistence saved after every change (for
    persistent sessions that survive a broker crash) and room for long queues."""

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).is_file():
            pytest.fail("mosquitto is missing: `make test` installs it (apt-get install mosquitto)")
        self.binary = binary
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        (tmp / "data").mkdir()
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "user root\n"  # no effect unless run as root; keeps the temp dir writable then
            "persistence true\n"
            f"persistence_location {tmp / 'data'}/\n"
            "autosave_on_changes true\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            f"log_dest file {tmp / 'mosquitto.log'}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited with {self.proc.returncode}")
            time.sleep(0.02)
        raise AssertionError("mosquitto did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    m = Mosquitto(tmp_path)
    m.start()
    yield m
    m.stop()


ROOT = Path(__file__).resolve().parent.parent


class Twin:
    """A ``twin`` command (``python -m twin ARGS``) run as a real subprocess from the project
    root, its output read line by line as the test waits for what it needs."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        import os
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "twin", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []

    def wait_for(self, pattern: str, timeout: float = 240) -> re.Match[str]:
        """Read output until a line matches ``pattern``; fail with the output if it ends first."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if m := re.search(pattern, line):
                return m
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "".join(self.lines))

    def url_and_token(self) -> tuple[str, str]:
        """The WebSocket URL and the generated admin token ``twin serve`` prints."""
        url = self.wait_for(r"at (ws://\S+/ws)").group(1)
        return url, self.wait_for(r"admin token .*: (\S+)$").group(1)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> str:
        """Stop it (SIGINT by default) and return the rest of its output."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rest, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        return rest or ""


class Collector:
    """An adapter's ``on_telemetry`` for tests: keeps every batch, lets a test wait for a
    condition on everything received so far (for at most ``timeout_s``)."""

    timeout_s = 10.0

    def __init__(self) -> None:
        self.batches: list[list[Telemetry]] = []
        self.items: list[Telemetry] = []
        self._changed = asyncio.Event()

    def __call__(self, batch: list[Telemetry]) -> None:
        self.batches.append(batch)
        self.items.extend(batch)
        self._changed.set()

    async def until(
        self, check: Callable[[list[Telemetry]], bool], timeout: float | None = None
    ) -> None:
        deadline = time.monotonic() + (self.timeout_s if timeout is None else timeout)
        while not check(self.items):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting; received {self.items[-20:]!r}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=left)

    def samples(self, address: str | None = None) -> list[Sample]:
        return [
            i
            for i in self.items
            if isinstance(i, Sample) and (address is None or i.address == address)
        ]

    def rejected(self) -> list[Reason]:
        return [i.reason for i in self.items if isinstance(i, Rejected)]

    def links(self) -> list[bool]:
        return [i.up for i in self.items if isinstance(i, Link)]
