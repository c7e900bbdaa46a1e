"""What every Rewind benchmark shares: durable server settings, and the closing lines."""

from __future__ import annotations

import os

# Production-like durability, so the ratios are those a real deployment would see.
BENCH_SETTINGS: dict[str, str] = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "512MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
}


# Rewind's capture with the transaction record left out: rewind.journal_tx() returns a constant, so
# no capture writes or looks up a record. What journal-mode capture costs without the one record per
# transaction that issue #2 requires (capture_parts.py, capture_overhead.py --reference).
NO_TX_RECORD: tuple[str, ...] = (
    "CREATE OR REPLACE FUNCTION rewind.journal_tx() RETURNS bigint LANGUAGE sql VOLATILE AS $$ SELECT 0::bigint $$",)


def finish(target: str, ratios: dict[str, float]) -> None:
    """The last lines of every benchmark: machine load, the target, then the ratios."""
    print(f"load average at end: {os.getloadavg()[0]:.2f} (other work on the machine adds noise)")
    print(f"target: {target}")
    for name, value in ratios.items():
        print(f"ratio {name}: {value:.2f}")
