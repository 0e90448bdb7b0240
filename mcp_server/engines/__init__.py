"""Engine registry: name -> ``module:Class``, imported only when chosen.

Importing this package loads no engine (torch, transformers and xgrammar stay unloaded
until :func:`create_engine` picks the embedded engine).
"""

from __future__ import annotations

import importlib

from mcp_server.engines.base import Engine
from mcp_server.errors import InvalidRequest
from mcp_server.settings import Settings

__all__ = ["ENGINES", "create_engine"]

ENGINES = {
    "embedded": "mcp_server.engines.embedded.engine:EmbeddedEngine",
    "sglang": "mcp_server.engines.sglang.engine:SGLangEngine",
}


def create_engine(settings: Settings) -> Engine:
    """Build (but do not start) the engine named by ``settings.engine``.

    Raises:
        InvalidRequest: the name is not in :data:`ENGINES` (param ``engine``).
    """
    target = ENGINES.get(settings.engine)
    if target is None:
        raise InvalidRequest(
            f"Unknown engine '{settings.engine}'; choose one of: {', '.join(ENGINES)}.",
            param="engine",
        )
    module_name, _, class_name = target.partition(":")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    return engine_class.from_settings(settings)
