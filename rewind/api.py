"""The sidecar's HTTP API: liveness, readiness and Prometheus metrics for whoever runs it
(Kubernetes probes, systemd watchdogs, a Prometheus server)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

import rewind
from journal import StreamStats


def create_app(stats: Callable[[], StreamStats], registry: CollectorRegistry, *, slot: str) -> FastAPI:
    app = FastAPI(title="rewind", version=rewind.__version__, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process answers: whether it streams is /readyz's question."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """200 once the slot exists and the stream runs; 503 before that and while it reconnects."""
        s = stats()
        body: dict[str, Any] = {"ready": s.ready, "slot": slot, "lag_bytes": s.lag_bytes,
                                "lag_seconds": s.lag_seconds, "gaps_total": s.gaps_total}
        return JSONResponse(body, status_code=200 if s.ready else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
