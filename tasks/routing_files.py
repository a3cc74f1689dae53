"""The routing file and the list files it names, stamped (mtime, size) so that the workers and
the HTTP app both notice an edit on disk and read the file again."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sync.compiler import CompiledRouting

# One entry per file: (mtime in ns, size), or None for a file that cannot be stat'ed.
Stamp = tuple[tuple[int, int] | None, ...]


def routing_files(config: str, routing: CompiledRouting | None) -> list[Path]:
    """The routing file and the list files it names (relative to its folder)."""
    files = [Path(config)]
    if routing is not None:
        base = Path(config).parent
        files += [base / spec.file for spec in routing.file.lists.values() if spec.file]
    return files


def files_stamp(files: Sequence[Path]) -> Stamp:
    """What changes when any of `files` is edited, replaced or removed."""
    stamps: list[tuple[int, int] | None] = []
    for file in files:
        try:
            st = file.stat()
        except OSError:
            stamps.append(None)
        else:
            stamps.append((st.st_mtime_ns, st.st_size))
    return tuple(stamps)
