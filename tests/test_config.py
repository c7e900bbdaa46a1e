"""`rewind serve` settings: flags over environment over rewind.toml over defaults, bad values named
by where they came from; log lines that are JSON and never carry a password."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest

from journal import BadInput
from rewind import logs, priority
from rewind.config import DEFAULT_PORT, Settings, load_settings, parse_http

SECRET = "s3cret-pw"
DSN = f"postgresql://admin:{SECRET}@db.example/shop"


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rewind.toml"
    path.write_text(text)
    return path


def test_defaults_without_any_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./rewind.toml: fine, it is optional
    s = load_settings({}, env={})
    assert s == Settings()
    assert (s.host, s.port) == ("127.0.0.1", DEFAULT_PORT) and s.log_format == "text" and s.config is None


def test_flags_over_environment_over_file_over_defaults(tmp_path: Path) -> None:
    path = toml(tmp_path, f"""
[serve]
dsn = "{DSN}"
journal = "sqlite:////var/lib/rewind/file.sqlite"
http = "0.0.0.0:9000"
log_format = "json"
slot = "from_file"
max_lag = 1000

[backup]
store = "file:///tmp/elsewhere"
""")
    env = {"REWIND_HTTP": "127.0.0.1:9100", "REWIND_SLOT": "from_env", "REWIND_MAX_LAG": "2000",
           "REWIND_JOURNAL": ""}  # empty counts as unset
    s = load_settings({"slot": "from_flag", "dsn": None}, env=env, config=path)
    assert s.slot == "from_flag"  # flag over env over file
    assert s.max_lag == 2000 and s.http == "127.0.0.1:9100"  # env over file
    assert s.dsn == DSN and s.log_format == "json" and s.journal == "sqlite:////var/lib/rewind/file.sqlite"
    assert s.heartbeat_seconds == 10.0 and s.nice == 10  # defaults
    assert load_settings({}, env={"REWIND_NICE": "0"}).nice == 0
    assert s.config == path
    # REWIND_CONFIG names the file when --config does not
    assert load_settings({}, env={"REWIND_CONFIG": str(path)}).slot == "from_file"


def test_bad_values_name_their_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for bad in ("20", "-1", "1.5", "x"):
        with pytest.raises(BadInput, match="REWIND_NICE"):
            load_settings({}, env={"REWIND_NICE": bad})
    with pytest.raises(BadInput, match="REWIND_MAX_LAG 'lots'"):
        load_settings({}, env={"REWIND_MAX_LAG": "lots"})
    with pytest.raises(BadInput, match="--http"):
        load_settings({"http": "example.org"}, env={})
    with pytest.raises(BadInput, match=r"\[serve\] log_format 'xml': use text or json"):
        load_settings({}, env={}, config=toml(tmp_path, '[serve]\nlog_format = "xml"\n'))
    with pytest.raises(BadInput, match="heartbeat_seconds"):
        load_settings({}, env={}, config=toml(tmp_path, "[serve]\nheartbeat_seconds = 0\n"))
    with pytest.raises(BadInput, match=r"unknown \[serve\] setting\(s\): port"):
        load_settings({}, env={}, config=toml(tmp_path, "[serve]\nport = 1\n"))
    with pytest.raises(BadInput, match="not found"):
        load_settings({}, env={"REWIND_CONFIG": str(tmp_path / "missing.toml")})
    with pytest.raises(BadInput) as exc:  # a bad value is shown masked
        load_settings({}, env={"REWIND_JOURNAL": DSN, "REWIND_HTTP": f"{DSN}:x"})
    assert SECRET not in str(exc.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8321", ("127.0.0.1", 8321)), ("0.0.0.0:80", ("0.0.0.0", 80)), (":9000", ("127.0.0.1", 9000)),
    ("9001", ("127.0.0.1", 9001)), ("[::1]:8321", ("::1", 8321)), ("localhost:0", ("localhost", 0)),
])
def test_http_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_http(text) == expected


@pytest.mark.parametrize("text", ["nowhere", "127.0.0.1:", "127.0.0.1:70000", "::1:80", "host:port"])
def test_bad_http_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_http(text)


def test_settings_repr_masks_passwords() -> None:
    shown = repr(Settings(dsn=DSN, journal=DSN.replace("shop", "journal")))
    assert SECRET not in shown and "admin:***@db.example" in shown


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_log_lines_never_carry_a_password(log_format: str) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter((logs.JsonFormatter if log_format == "json" else logs.TextFormatter)([DSN]))
    log = logging.getLogger(f"rewind.test.{log_format}")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("cannot reach %s (password=%s)", DSN, SECRET, extra={"dsn": DSN, "attempt": 2})
        try:
            raise RuntimeError(f'connection to "{DSN}" failed')
        except RuntimeError:
            log.exception("stream failed")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert SECRET not in text and "admin:***@db.example" in text
    if log_format == "json":
        first, second = (json.loads(line) for line in text.splitlines())
        assert first["level"] == "warning" and first["logger"] == "rewind.test.json" and first["attempt"] == 2
        assert first["dsn"] == "postgresql://admin:***@db.example/shop" and first["time"].endswith("+00:00")
        assert second["message"] == "stream failed" and "RuntimeError" in second["exception"]
    else:
        assert "WARNING rewind.test.text: cannot reach" in text and "attempt=2" in text


@pytest.mark.parametrize(("cgroup", "v2_root", "root"), [
    ("4:memory:/x\n1:cpu:/\n0::/\n", None, True),  # v1 cpu at the root (this machine)
    ("3:cpu,cpuacct:/system.slice/rewind.service\n", None, False),  # v1 cpu below the root
    ("0::/\n", "cpu memory", True),  # v2, the root cgroup
    ("0::/system.slice/rewind.service\n", "cpuset cpu io memory pids", False),  # v2 with the cpu controller
    ("0::/user.slice/session-1.scope\n", "memory pids", True),  # v2 without it: autogroups apply
    ("0::/system.slice/x.service\n", None, True),
])
def test_autogroups_apply_only_in_the_root_cpu_group(cgroup: str, v2_root: str | None, root: bool) -> None:
    assert priority.in_root_cpu_group(cgroup, v2_root) is root


@pytest.mark.parametrize(("text", "nice"), [
    ("/autogroup-238542 nice 0\n", 0),
    ("/autogroup-7 nice 10\n", 10),
    ("", None),  # the boot-time default group, as for a process whose ancestors never started a session
])
def test_autogroup_nice_reads_the_group_or_none(text: str, nice: int | None) -> None:
    assert priority.autogroup_nice(text) == nice


@pytest.mark.parametrize(("toml", "message"), [
    ('[backup]\nstroe = "file:///x"\n', "unknown [backup] setting(s): stroe"),  # a typo is not "no store"
    ('[backup.retention]\nkeep_daily = "7"\n', "whole numbers"),
    ('[backup.retention]\nkeep_yearly = 2\n', "unknown: keep_yearly"),
    ('[backup.s3]\nlock_days = 0\n', "lock_days"),
])
def test_backup_settings_are_checked(tmp_path: Path, toml: str, message: str) -> None:
    from backup import config as backup_config

    path = tmp_path / "rewind.toml"
    path.write_text(toml)
    with pytest.raises(BadInput, match=re.escape(message)):
        backup_config.load(path)
