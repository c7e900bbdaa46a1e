"""The `[backup]` part of rewind.toml: store, S3 settings, retention and schedules.

```toml
[backup]
store = "s3://bucket/rewind"
dsn = "postgresql://..."          # else REWIND_DSN
scratch_dsn = "postgresql://..."  # else the same server as dsn
checks = ["checks/orders.sql"]

[backup.s3]
endpoint_url = "http://127.0.0.1:9000"
path_style = true
sse = "aws:kms"
kms_key_id = "alias/rewind"
lock_mode = "COMPLIANCE"
lock_days = 30

[backup.retention]
keep_last = 7
keep_daily = 14
keep_weekly = 8
keep_monthly = 12

[backup.schedule]
create = "0 * * * *"
verify = "30 3 * * *"
prune = "0 4 * * *"
jobstore = "sqlite:////var/lib/rewind/jobs.sqlite"
```
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backup.stores import StoreOptions
from journal.errors import BadInput

_BACKUP_KEYS = {"store", "dsn", "scratch_dsn", "checks", "s3", "retention", "schedule"}
_RETENTION_KEYS = {"keep_last", "keep_daily", "keep_weekly", "keep_monthly"}
_S3_KEYS = {"endpoint_url", "region", "path_style", "sse", "kms_key_id", "lock_mode", "lock_days",
            "multipart_threshold", "part_size", "max_attempts"}


@dataclass
class BackupConfig:
    path: Path | None = None
    store: str | None = None
    dsn: str | None = None
    scratch_dsn: str | None = None
    checks: list[Path] = field(default_factory=list)
    s3: StoreOptions = field(default_factory=StoreOptions)
    retention: dict[str, int] = field(default_factory=dict)
    schedule: dict[str, str] = field(default_factory=dict)
    jobstore: str | None = None


def read_document(path: Path | None, env: Mapping[str, str] | None = None) -> tuple[Path | None, dict[str, Any]]:
    """The rewind.toml to read and its parsed content: the file named, else REWIND_CONFIG, else
    ./rewind.toml if present (a missing default file is fine; a missing named one is not). One
    resolution for its [backup] and [serve] tables (rewind.config), so both come from one file."""
    env = os.environ if env is None else env
    explicit = path is not None or "REWIND_CONFIG" in env
    p = path or Path(env.get("REWIND_CONFIG", "rewind.toml"))
    if not p.is_file():
        if explicit:
            raise BadInput(f"config file {p} not found")
        return None, {}
    import tomllib  # only when there is a file to read

    try:
        return p, tomllib.loads(p.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"cannot read {p}: {exc}") from None


def load(path: Path | None = None) -> BackupConfig:
    """The [backup] table of rewind.toml (see read_document); defaults without a file."""
    p, doc = read_document(path)
    if p is None:
        return BackupConfig()
    section: dict[str, Any] = doc.get("backup", {})
    unknown = set(section) - _BACKUP_KEYS  # a typo (stroe =) must not silently mean "no store"
    if unknown:
        raise BadInput(f"{p}: unknown [backup] setting(s): {', '.join(sorted(unknown))}")
    cfg = BackupConfig(path=p, store=section.get("store"), dsn=section.get("dsn"),
                       scratch_dsn=section.get("scratch_dsn"))
    cfg.checks = [(p.parent / c) for c in section.get("checks", [])]
    s3 = section.get("s3", {})
    unknown = set(s3) - _S3_KEYS
    if unknown:
        raise BadInput(f"{p}: unknown [backup.s3] setting(s): {', '.join(sorted(unknown))}")
    cfg.s3 = StoreOptions(**s3)
    if cfg.s3.lock_days is not None and (not isinstance(cfg.s3.lock_days, int) or cfg.s3.lock_days < 1):
        raise BadInput(f"{p}: [backup.s3] lock_days must be a whole number of days, at least 1")
    retention = section.get("retention", {})
    unknown = set(retention) - _RETENTION_KEYS
    if unknown or not all(isinstance(v, int) and not isinstance(v, bool) for v in retention.values()):
        raise BadInput(f"{p}: [backup.retention] takes whole numbers for {', '.join(sorted(_RETENTION_KEYS))}"
                       + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else ""))
    cfg.retention = dict(retention)
    sched = dict(section.get("schedule", {}))
    cfg.jobstore = sched.pop("jobstore", None)
    unknown = set(sched) - {"create", "verify", "prune"}
    if unknown:
        raise BadInput(f"{p}: unknown [backup.schedule] job(s): {', '.join(sorted(unknown))} "
                       "(create, verify, prune)")
    cfg.schedule = {k: str(v) for k, v in sched.items()}
    return cfg
