"""Starting and stopping the fleet's processes (used by `python -m examples.fleet` and by the tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def spawn(
    name: str, module: str, args: list[str], port: int, log_dir: Path, env: dict[str, str] | None = None
) -> Process:
    """`python -m module args...` with output in `log_dir/name.log`; returns once `port` accepts."""
    process = launch(name, module, args, port, log_dir, env)
    wait_until_listening(process)
    return process


def launch(
    name: str, module: str, args: list[str], port: int, log_dir: Path, env: dict[str, str] | None = None
) -> Process:
    """Start `python -m module args...` without waiting (start several, then `wait_until_listening`)."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return Process(name, popen, port, log_path)


def wait_until_listening(process: Process, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(
                f"{process.name} exited with {process.popen.returncode}:\n{process.log_text()}"
            )
        if port_open(process.port):
            return
        time.sleep(0.05)
    stop(process)
    raise RuntimeError(f"{process.name} did not start listening on {process.port}:\n{process.log_text()}")


def stop(process: Process, timeout: float = 20.0) -> None:
    if process.popen.poll() is None:
        process.popen.terminate()
        try:
            process.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait()
