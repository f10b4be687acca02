"""The collector: FastAPI app factory. ``tokentrail serve`` runs it with uvicorn."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

import collector.routers
from collector.grpc_server import start_grpc_receiver
from collector.runtime import Runtime
from ingest.store import StoreError
from tokentrail.settings import Settings


def router_modules() -> list[ModuleType]:
    """Every module in collector/routers with a ``router``: one per audience.

    Discovered rather than listed, so adding an audience's router is adding
    its module."""
    found = []
    for info in sorted(pkgutil.iter_modules(collector.routers.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"collector.routers.{info.name}")
        if hasattr(module, "router"):
            found.append(module)
    return found


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = Runtime.open(settings)
        app.state.keys = app.state.runtime.keys
        try:
            grpc_receiver = start_grpc_receiver(app.state.runtime)  # OTLP/gRPC beside this app
        except BaseException:
            app.state.runtime.close()  # the store must be closed even when start-up fails
            raise
        try:
            yield
        finally:
            if grpc_receiver is not None:
                grpc_receiver.stop()  # before the writer's last flush
            app.state.runtime.close()

    app = FastAPI(
        title="Tokentrail collector",
        summary="OTLP receiver and HTTP API for LLM cost and trace data",
        version="0.1.0",
        lifespan=lifespan,
    )
    for module in router_modules():
        app.include_router(module.router)

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in err['loc'][1:]) or err['loc'][0]}: {err['msg']}"
            for err in exc.errors()
        ]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=400)

    @app.exception_handler(StoreError)
    async def store_failed(_: Request, exc: StoreError) -> JSONResponse:
        # The store refused a query: say so rather than a bare 500.
        return JSONResponse({"detail": f"store error: {str(exc)[:500]}"}, status_code=503)

    return app
