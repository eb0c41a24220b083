"""No route and no dependency is a plain function: FastAPI runs those in its thread pool, a
thread hop for every request (a refresh spent a tenth of its CPU handing ``browser_of``, a
one-line lookup, to a thread and back: docs/benchmarks.md)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

import auth_service.api.routes as routes_package


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for inner in dependant.dependencies:
        yield from _dependants(inner)


def _routes() -> Iterator[APIRoute]:
    for module in pkgutil.iter_modules(routes_package.__path__):
        loaded = importlib.import_module(f"{routes_package.__name__}.{module.name}")
        router = getattr(loaded, "router", None)
        if isinstance(router, APIRouter):
            yield from (route for route in router.routes if isinstance(route, APIRoute))


def _is_async(call: Any) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
        getattr(call, "__call__", None)  # noqa: B004  (an instance with an async __call__)
    )


def test_every_endpoint_and_dependency_is_a_coroutine_function() -> None:
    found = list(_routes())
    assert len(found) > 40  # the walk sees the routes
    plain = sorted(
        {
            f"{route.path}: {getattr(dependant.call, '__qualname__', dependant.call)}"
            for route in found
            for dependant in _dependants(route.dependant)
            if dependant.call is not None and not _is_async(dependant.call)
        }
    )
    assert plain == []
