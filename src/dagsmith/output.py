"""Writing generated files: all or nothing, byte-identical for the same input.

Every file is first written to a temporary file in its target folder, then all are renamed into
place, so a reader (Airflow's DAG processor, a CI diff) never sees a half-written file, and a
failure before the renames leaves the folder as it was.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

from .errors import DagsmithError

# What tempfile.mkstemp(prefix=".NAME.", suffix=".tmp") makes: ".NAME." + 8 random characters + ".tmp".
_STAGED = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp", re.ASCII)
STALE_AFTER_SECONDS = 60  # a write in progress renames its files within seconds


class OutputError(DagsmithError):
    """The output folder cannot be written (it is a file, a parent is a file, no permission...)."""


def sweep_stale(folder: Path, now: float | None = None) -> list[Path]:
    """Delete the staged files a killed write left in `folder` (older than a minute); return them."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not _STAGED.fullmatch(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_SECONDS:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass  # gone already, or not ours to delete
    return removed


def _folder(path: Path, out_dir: Path) -> None:
    """Make `path` a folder, or say in one line why it cannot be one."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot write to {out_dir}: {path} is a file, not a folder") from None
    except OSError as exc:
        raise OutputError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None


def write_files(out_dir: Path, files: dict[str, str]) -> list[Path]:
    """Write {relative_path: text} under out_dir atomically; return the written paths."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"cannot write to {out_dir}: it is a file, not a folder (give a folder to write the generated files in)")
    staged: list[tuple[str, Path]] = []
    swept: set[Path] = set()
    try:
        for relative, text in sorted(files.items()):
            target = out_dir / relative
            _folder(target.parent, out_dir)
            if target.parent not in swept:
                sweep_stale(target.parent)
                swept.add(target.parent)
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            except OSError as exc:
                raise OutputError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
            staged.append((tmp, target))  # before writing: a failed write still removes it
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    for index, (tmp, target) in enumerate(staged):
        try:
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except OSError as exc:
            for leftover, _ in staged[index:]:
                Path(leftover).unlink(missing_ok=True)
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    return [target for _, target in staged]
