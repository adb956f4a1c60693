"""Disk cache of decoded datasets, so a second run starts in seconds instead of re-decoding JPEGs.

Entries are keyed by the source path and the size and mtime of every file read, so an edited,
added or removed file invalidates the entry. Set ``CLASSROOM_FER_CACHE`` to move it, or to
``off`` to disable it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
_VERSION = 2  # 2: folder images decoded upright (EXIF), truncated files skipped


def cache_dir() -> Path | None:
    setting = os.environ.get("CLASSROOM_FER_CACHE", "")
    if setting.lower() == "off":
        return None
    return Path(setting) if setting else Path.home() / ".cache" / "classroom_fer"


def _key(source: Path, kind: str, files: list[str] | None) -> str:
    digest = hashlib.sha256(f"{_VERSION}|{kind}|{source.resolve()}".encode())
    for file in files if files is not None else [str(source)]:
        stat = os.stat(file)
        digest.update(f"|{file}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def cached(source: Path, kind: str, build: Callable[[], T], files: list[str] | None = None) -> T:
    """Return ``build()``, memoised on disk under a key of the source files' identity."""
    directory = cache_dir()
    if directory is None:
        return build()
    entry = directory / f"{kind}-{_key(source, kind, files)}.pkl"
    if entry.exists():
        try:
            with open(entry, "rb") as handle:
                return pickle.load(handle)
        except Exception as error:  # a damaged cache entry is rebuilt, never fatal
            log.warning("%s: ignoring damaged cache entry (%s)", entry, error)
    value = build()
    partial = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, delete=False, suffix=".tmp") as handle:
            partial = handle.name
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(handle.name, entry)
    except OSError as error:  # e.g. a full disk: no half-written entry is left behind
        if partial is not None:
            Path(partial).unlink(missing_ok=True)
        log.warning("could not write dataset cache in %s (%s); continuing without it", directory, error)
    return value
