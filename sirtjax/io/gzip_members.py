"""gzip files compressed on every core: consecutive gzip members, which every gzip reader reads as one stream."""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

GZIP_MEMBER_BYTES = 8 << 20


def write_gzip(data: bytes, path: Path) -> None:
    """Write ``data`` gzip-compressed as consecutive members of ``GZIP_MEMBER_BYTES``, compressed side by side in a
    thread per CPU.

    zlib level 1 with run-length matches only (``Z_RLE``): about 2.3x the speed of level 1's usual match search on
    float images and displacement fields at nearly their size (a field 0.835 of its bytes against 0.832; a CT
    0.67 against 0.62), and label maps smaller still.

    A file of several gzip members is one gzip stream to every reader (zlib's gzread in ITK and NIfTI tools,
    Python's gzip in nibabel); only the compression is split over the cores.
    """
    view = memoryview(data)
    chunks = [view[i : i + GZIP_MEMBER_BYTES] for i in range(0, len(view), GZIP_MEMBER_BYTES)] or [view]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool, open(path, "wb") as fh:
        fh.writelines(pool.map(_member, chunks))


def _member(chunk: memoryview) -> bytes:
    """One gzip member (header with mtime 0, deflate level 1 with ``Z_RLE``, CRC and size)."""
    deflate = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 8, zlib.Z_RLE)
    return deflate.compress(chunk) + deflate.flush()
