"""Invalid configuration fails at start with a message naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from app.config import ConfigurationError, load_settings
from tests.helpers import ROOT


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"port": 0}, "SESSION_BROKER_PORT"),
        ({"port": "eighty"}, "SESSION_BROKER_PORT"),
        ({"default_idle_timeout_seconds": 0}, "SESSION_BROKER_DEFAULT_IDLE_TIMEOUT_SECONDS"),
        (
            {"default_idle_timeout_seconds": 100, "max_idle_timeout_seconds": 50},
            "DEFAULT_IDLE_TIMEOUT_SECONDS",
        ),
        ({"touch_granularity_seconds": -1}, "SESSION_BROKER_TOUCH_GRANULARITY_SECONDS"),
        ({"max_metadata_bytes": 1}, "SESSION_BROKER_MAX_METADATA_BYTES"),
        ({"database_url": "mysql://x/y"}, "SESSION_BROKER_DATABASE_URL"),
        ({"api_keys_file": "/nonexistent/keys"}, "SESSION_BROKER_API_KEYS_FILE"),
        ({"log_level": "LOUD"}, "SESSION_BROKER_LOG_LEVEL"),
        ({"principal_mismatch_status": "500"}, "SESSION_BROKER_PRINCIPAL_MISMATCH_STATUS"),
        ({"db_pool_min_size": 50, "db_pool_max_size": 10}, "SESSION_BROKER_DB_POOL_MIN_SIZE"),
    ],
)
def test_invalid_settings_name_the_variable(overrides: dict, named: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(**overrides)
    assert named in str(raised.value)


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SESSION_BROKER_")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_with_a_bad_environment_variable_exits_naming_it() -> None:
    result = run_cli("serve", SESSION_BROKER_MAX_IDLE_TIMEOUT_SECONDS="lots")
    assert result.returncode == 2
    assert "SESSION_BROKER_MAX_IDLE_TIMEOUT_SECONDS" in result.stderr


def test_serve_without_keys_on_a_public_address_refuses_to_start() -> None:
    result = run_cli("serve", SESSION_BROKER_HOST="0.0.0.0")
    assert result.returncode == 2
    assert "refusing to serve without authentication" in result.stderr


def test_a_misspelt_setting_stops_serve_naming_the_closest_real_one() -> None:
    result = run_cli("serve", SESSION_BROKER_PURGE_INTERVAL_SECOND="5")
    assert result.returncode == 2
    assert "SESSION_BROKER_PURGE_INTERVAL_SECOND:" in result.stderr
    assert "did you mean SESSION_BROKER_PURGE_INTERVAL_SECONDS?" in result.stderr


@pytest.mark.parametrize("command", ["migrate", "purge"])
def test_every_command_refuses_an_unknown_setting(command: str) -> None:
    result = run_cli(command, SESSION_BROKER_NO_SUCH_THING="1")
    assert result.returncode == 2
    assert "SESSION_BROKER_NO_SUCH_THING: not a setting" in result.stderr


def test_unknown_variables_are_matched_like_settings_case_insensitively() -> None:
    from app.config import unknown_variables

    assert unknown_variables({"session_broker_port": "1", "SESSION_BROKER_PORT": "2", "PATH": "/bin"}) == []
    (problem,) = unknown_variables({"session_broker_purge_batchsize": "1"})
    assert problem.startswith("session_broker_purge_batchsize: not a setting; did you mean")
    assert "SESSION_BROKER_PURGE_BATCH_SIZE" in problem


def test_an_unknown_tenant_quota_key_stops_the_service_naming_the_closest_key() -> None:
    result = run_cli(
        "serve",
        SESSION_BROKER_TENANT_QUOTAS='{"acme": {"max_sessions_per_principle": 5}}',
    )
    assert result.returncode == 2
    assert "SESSION_BROKER_TENANT_QUOTAS['acme']: max_sessions_per_principle: unknown key" in result.stderr
    assert "did you mean 'max_sessions_per_principal'?" in result.stderr
