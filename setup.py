"""Build hook: the wheel ships ``schemas/``, ``capability/`` and ``skills/`` as ``mcp_server/data/``.

The top-level folders stay the source of truth; an editable install reads them in place
(``mcp_server.capability.schemas.PROJECT_ROOT``). Everything else is in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DATA_FOLDERS = ("schemas", "capability", "skills")


class BuildPyWithData(build_py):
    """``build_py`` that also copies :data:`DATA_FOLDERS` into ``<build_lib>/mcp_server/data/``."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "mcp_server" / "data"
        shutil.rmtree(target, ignore_errors=True)  # a file removed from the tree leaves the wheel too
        for name in DATA_FOLDERS:
            shutil.copytree(ROOT / name, target / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithData})
