"""Prometheus metrics of `rewind serve`: the stream's, read from Streamer.stats at scrape time
(so there is no second set of counters to keep in step with the stream), and the backup
scheduler's, which live in backup.schedule.REGISTRY because `rewind backup schedule run` serves
them on its own too."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from journal import StreamStats

# name as exposed -> help; documented in the README under "Running the sidecar"
STREAM_METRICS = {
    "rewind_stream_ready": "1 while the slot exists and the stream is running, else 0.",
    "rewind_stream_changes_total": "Journaled changes mirrored since the process started (rate() gives changes/s).",
    "rewind_stream_transactions_total": "Journaled transactions mirrored since the process started.",
    "rewind_stream_lag_bytes": "WAL bytes between the server's current position and the slot's confirmed one.",
    "rewind_stream_lag_seconds": "Age of the newest mirrored commit when it was mirrored; 0 when idle.",
    "rewind_stream_gaps_total": "Gap records in the mirror (slot resets: changes the mirror does not have).",
    "rewind_stream_last_commit_timestamp_seconds": "Unix time of the newest mirrored commit.",
    "rewind_stream_mirror_errors_total": "Failed writes to the mirror (each retried) since the process started.",
}


class StreamCollector(Collector):
    """Reads the stream's statistics when scraped; a value not known yet (no heartbeat yet, no
    commit yet) has no sample rather than a made-up zero."""

    def __init__(self, stats: Callable[[], StreamStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        h = STREAM_METRICS

        def gauge(name: str, value: float | None) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, h[name])
            if value is not None:
                family.add_metric([], value)
            return family

        def counter(name: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name.removesuffix("_total"), h[name], value=value)

        yield gauge("rewind_stream_ready", 1.0 if s.ready else 0.0)
        yield counter("rewind_stream_changes_total", s.changes_total)
        yield counter("rewind_stream_transactions_total", s.transactions_total)
        yield gauge("rewind_stream_lag_bytes", s.lag_bytes)
        yield gauge("rewind_stream_lag_seconds", s.lag_seconds)
        yield counter("rewind_stream_gaps_total", s.gaps_total)
        last = s.last_commit_time
        yield gauge("rewind_stream_last_commit_timestamp_seconds", last.timestamp() if last else None)
        yield counter("rewind_stream_mirror_errors_total", s.mirror_errors_total)


class _Forward(Collector):
    """Another registry's metrics, exposed as if they were this one's."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()


def service_registry(stats: Callable[[], StreamStats]) -> CollectorRegistry:
    """One registry per service: the stream's metrics, the backup scheduler's and the process's
    (process_cpu_seconds_total, process_resident_memory_bytes, ...)."""
    from backup import schedule

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StreamCollector(stats))
    registry.register(_Forward(schedule.REGISTRY))
    ProcessCollector(registry=registry)
    return registry
