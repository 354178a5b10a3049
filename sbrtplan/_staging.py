"""Staged output folders: write everything next to the target, rename at the end.

:func:`staged_dir` yields a hidden sibling folder of the target; when the body
completes, its content replaces the target's (the whole folder is renamed when
the target is absent or empty; otherwise each entry replaces the entry of the
same name, the previous ones kept aside until every rename succeeded, so other
files of the user in that folder are left alone).  When the body raises, the
staging folder is removed and the target is as it was: nothing half-written is
ever visible under the target's name.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ._log import get_logger

log = get_logger(__name__)

#: prefix of the hidden staging and backup folders (a crashed run's leftovers are recognisable)
STAGING_PREFIX = ".sbrtplan-staging-"


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _commit(stage: Path, target: Path) -> None:
    if not target.exists():
        os.replace(stage, target)
        return
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
        os.replace(stage, target)
        return
    backup = target / f"{STAGING_PREFIX}old-{os.getpid()}"
    backup.mkdir()
    moved: list[tuple[Path, Path]] = []  # (original place, place in backup)
    placed: list[Path] = []
    try:
        for entry in sorted(stage.iterdir()):
            dest = target / entry.name
            if dest.exists() or dest.is_symlink():
                aside = backup / entry.name
                os.replace(dest, aside)
                moved.append((dest, aside))
            os.replace(entry, dest)
            placed.append(dest)
    except BaseException:
        for dest in placed:  # roll back: the previous complete result comes back
            _remove(dest)
        for dest, aside in moved:
            os.replace(aside, dest)
        _remove(backup)
        raise
    _remove(backup)
    _remove(stage)


@contextmanager
def staged_dir(target) -> Iterator[Path]:
    """Yield a staging folder for ``target``; move its content into ``target`` on success.

    Examples
    --------
    >>> with staged_dir("plan-out") as tmp:   # doctest: +SKIP
    ...     (tmp / "metrics.json").write_text("{}")
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        from .errors import InputError

        raise InputError(f"output folder {target}: exists and is a file, not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = target.parent / f"{STAGING_PREFIX}{os.getpid()}-{target.name}"
    _remove(stage)
    stage.mkdir()
    try:
        yield stage
        _commit(stage, target)
    except BaseException:
        _remove(stage)
        raise

