"""Write-then-rename, so a killed process never leaves a half-written file under the real name."""

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same folder, same suffix); move it into place on success.

    The temporary file is removed if the body raises. The suffix is kept because writers such as
    ffmpeg and trimesh pick the format from it; the name is not created in advance, so the file
    gets ordinary permissions rather than mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: Path) -> int:
    """Deletes the temporaries ``atomic_write`` leaves when its process is killed (kill -9, power loss)
    anywhere under ``folder``; returns how many there were. Only for a folder no other process writes."""
    stale = [p for p in Path(folder).rglob(".*.tmp*") if p.is_file() and _TEMPORARY.fullmatch(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{8}\.tmp(\.[^.]+)?")
