"""The README's run command: `session-broker serve` on the embedded database, from nothing."""

from __future__ import annotations

import gc
import shutil
import tempfile
from pathlib import Path

import httpx

from tests.helpers import running_client, start_server, stop_server


def test_serve_starts_embedded_postgres_migrates_and_sessions_survive_a_restart(tmp_path: Path) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="sb-serve-"))
    data_dir.chmod(0o755)
    env = {"SESSION_BROKER_DATA_DIR": str(data_dir), "SESSION_BROKER_LOG_FORMAT": "text"}
    try:
        first = start_server(env, tmp_path / "first.log")
        try:
            assert httpx.get(first.base_url + "/readyz").status_code == 200
            created = httpx.post(
                first.base_url + "/v1/sessions", json={"metadata": {"n": 1}}
            )  # no keys: loopback
            assert created.status_code == 201
            session_id = created.json()["id"]
        finally:
            stop_server(first)
        assert first.process.returncode == 0  # SIGTERM is a graceful shutdown
        assert not (data_dir / "pg" / "postmaster.pid").exists()  # and it stopped the embedded database
        assert "WITHOUT authentication" in first.log_text()

        second = start_server(env, tmp_path / "second.log")
        try:
            got = httpx.get(f"{second.base_url}/v1/sessions/{session_id}")
            assert got.status_code == 200 and got.json()["metadata"] == {"n": 1}
        finally:
            stop_server(second)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_startup_objects_stay_out_of_the_garbage_collector_while_serving(database_url, raw_db) -> None:
    # Full collections that traverse every module, route and model stopped the event loop for 65-90 ms;
    # the app freezes what exists after start-up and unfreezes it when it stops.
    assert gc.get_freeze_count() == 0
    async with running_client(database_url) as client:
        assert gc.get_freeze_count() > 10_000
        assert (await client.get("/healthz")).status_code == 200
    assert gc.get_freeze_count() == 0
