"""The `rewind` entry point: `rewind backup ...` runs under its own root (rewind.runner) without
importing the rest of the CLI, and must behave exactly as under the full one (rewind.cli.app)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rewind import cli, runner

ARGS = [
    ["backup", "--help"],
    ["backup", "create", "--help"],
    ["backup", "verify", "--help"],
    ["backup", "prune", "--help"],
    ["backup", "schedule", "--help"],
    ["backup", "schedule", "run", "--help"],
    ["backup"],
    ["backup", "create", "--no-such-option"],
    ["backup", "no-such-command"],
    ["backup", "create", "--store", "ftp://nowhere/x"],
    ["backup", "create", "--json"],
    ["backup", "--sse", "rot13", "list", "--store", "file:///nonexistent-rewind-store"],
]


def test_backup_root_has_the_settings_of_the_full_cli() -> None:
    full, backup_only = cli.app, runner.backup_root()
    assert (full._add_completion, full.pretty_exceptions_enable, full.info.no_args_is_help) == (
        backup_only._add_completion, backup_only.pretty_exceptions_enable, backup_only.info.no_args_is_help)
    assert full.registered_callback is None  # a root option would have to be given to backup_root() too


@pytest.mark.parametrize("args", ARGS, ids=" ".join)
def test_backup_root_behaves_as_the_full_cli(args: list[str], capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("REWIND_DSN", "REWIND_BACKUP_STORE", "REWIND_CONFIG", "REWIND_SCRATCH_DSN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no rewind.toml
    results = []
    for app in (cli.app, runner.backup_root()):
        capsys.readouterr()
        code = runner.run(app, list(args))
        captured = capsys.readouterr()
        results.append((code, captured.out, captured.err))
    assert results[0] == results[1]
    assert results[0][0] in (0, 2)


def test_backup_commands_do_not_import_the_rest(tmp_path: Path) -> None:
    """What `rewind backup create` would pay for at every start: undo planning, the CLI's other
    commands and the journal's reading and decoding, Rich (only a terminal or an error needs it),
    the S3 and SQL toolkits; listing a local store needs no database driver at all."""
    script = f"""
import json, sys
from rewind import runner
code = runner.run(runner.backup_root(), ["backup", "list", "--store", {(tmp_path / 'store').as_uri()!r}, "--json"])
print(json.dumps({{"code": code, "modules": sorted(sys.modules)}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["code"] == 0
    loaded = {m.split(".")[0] for m in report["modules"]} | set(report["modules"])
    for heavy in ("rewind.cli", "restore", "journal.reading", "journal.gaps", "journal.replication", "psycopg",
                  "psycopg2", "rich", "boto3", "botocore", "sqlalchemy", "fastapi", "uvicorn", "apscheduler",
                  "alembic"):
        assert heavy not in loaded, f"{heavy} imported by `rewind backup list --json`"


def test_python_m_rewind_dispatches(tmp_path: Path) -> None:
    full = subprocess.run([sys.executable, "-m", "rewind", "--help"], capture_output=True, text=True)
    assert full.returncode == 0 and "backup" in full.stdout and "undo" in full.stdout
    listed = subprocess.run([sys.executable, "-m", "rewind", "backup", "list", "--store",
                             (tmp_path / "store").as_uri(), "--json"], capture_output=True, text=True)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    bad = subprocess.run([sys.executable, "-m", "rewind", "backup", "create", "--store", "ftp://x/y"],
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert bad.returncode == 2 and "rewind:" in bad.stderr
