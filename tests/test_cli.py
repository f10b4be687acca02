"""The tokentrail command: every command has help; unbuilt ones say so plainly."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tests.conftest import ROOT, CollectorProcess
from tokentrail.cli import app

COMMANDS = [
    ["up"],
    ["serve"],
    ["proxy"],
    ["dashboards"],
    ["jobs", "run"],
    ["keys", "create"],
    ["keys", "list"],
    ["keys", "revoke"],
    ["audit", "export"],
    ["audit", "verify"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


@pytest.mark.parametrize(
    ("command", "sentence"),
    [
        (["jobs", "run", "--url", "http://127.0.0.1:9"], "no API key"),
        (["audit", "verify", "nowhere.jsonl"], "cannot read the manifest"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_commands_without_what_they_need_fail_with_a_sentence(
    command: list[str], sentence: str, tmp_path
) -> None:
    result = CliRunner().invoke(
        app,
        [*command, "--data-dir", str(tmp_path)]
        if command[0] == "jobs"
        else [*command[:2], str(tmp_path / command[2])],
    )
    assert result.exit_code == 1 and sentence in result.output


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tokentrail.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env or {k: v for k, v in os.environ.items() if not k.startswith("TOKENTRAIL_")},
    )


def test_keys_create_prints_a_working_key_once(collector: CollectorProcess) -> None:
    result = run_cli(
        "keys",
        "create",
        "--role",
        "finance",
        "--name",
        "finops",
        "--data-dir",
        str(collector.data_dir),
        "--url",
        collector.url,
    )
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("tt_") and "shown only this once" in result.stderr
    assert collector.get("/api/v1/spend", key=key).status_code == 200
    listed = run_cli("keys", "list", "--data-dir", str(collector.data_dir), "--url", collector.url)
    assert "finops" in listed.stdout and key not in listed.stdout


def test_admin_key_file_is_private(collector: CollectorProcess) -> None:
    mode = stat.S_IMODE((collector.data_dir / "admin.key").stat().st_mode)
    assert mode == 0o600


def test_keys_create_bad_role_and_no_collector(collector: CollectorProcess, tmp_path) -> None:
    bad = run_cli(
        "keys",
        "create",
        "--role",
        "superuser",
        "--name",
        "x",
        "--data-dir",
        str(collector.data_dir),
        "--url",
        collector.url,
    )
    assert bad.returncode == 1 and "role must be one of" in bad.stderr
    nowhere = run_cli(
        "keys",
        "create",
        "--role",
        "ingest",
        "--name",
        "x",
        "--data-dir",
        str(collector.data_dir),
        "--url",
        "http://127.0.0.1:9",
    )
    assert nowhere.returncode == 1 and "cannot reach the collector" in nowhere.stderr
    no_key = run_cli(
        "keys", "create", "--role", "ingest", "--name", "x", "--data-dir", str(tmp_path)
    )
    assert no_key.returncode == 1 and "no API key" in no_key.stderr


def test_api_key_env_wins_over_the_data_dir(collector: CollectorProcess, tmp_path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOKENTRAIL_")},
        "TOKENTRAIL_API_KEY": collector.create_key("finance"),
    }
    result = run_cli(
        "keys",
        "create",
        "--role",
        "ingest",
        "--name",
        "x",
        "--data-dir",
        str(tmp_path),
        "--url",
        collector.url,
        env=env,
    )
    assert result.returncode == 1 and "403" in result.stderr
