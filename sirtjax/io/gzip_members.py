"""gzip files compressed on every core: consecutive gzip members, which every gzip reader reads as one stream."""

from __future__ import annotations

import functools
import gzip
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

GZIP_MEMBER_BYTES = 8 << 20


def write_gzip(data: bytes, path: Path, *, level: int = 1, threads: int | None = None) -> None:
    """Write ``data`` gzip-compressed as consecutive members of ``GZIP_MEMBER_BYTES``, compressed side by side in
    ``threads`` threads (default: the CPU count); zlib level 1, as nibabel writes.

    A file of several gzip members is one gzip stream to every reader (zlib's gzread in ITK and NIfTI tools,
    Python's gzip in nibabel); only the compression is split over the cores.
    """
    view = memoryview(data)
    chunks = [view[i : i + GZIP_MEMBER_BYTES] for i in range(0, len(view), GZIP_MEMBER_BYTES)] or [view]
    member = functools.partial(gzip.compress, compresslevel=level, mtime=0)
    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool, open(path, "wb") as fh:
        fh.writelines(pool.map(member, chunks))
