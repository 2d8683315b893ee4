"""Writing generated files: all or nothing, byte-identical for the same input.

Every file is first written to a temporary file in its target folder, then all are renamed into
place, so a reader (Airflow's DAG processor, a CI diff) never sees a half-written file, and a
failure before the renames leaves the folder as it was.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_files(out_dir: Path, files: dict[str, str]) -> list[Path]:
    """Write {relative_path: text} under out_dir atomically; return the written paths."""
    out_dir = Path(out_dir)
    staged: list[tuple[str, Path]] = []
    try:
        for relative, text in sorted(files.items()):
            target = out_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            staged.append((tmp, target))
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    for tmp, target in staged:
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    return [target for _, target in staged]
