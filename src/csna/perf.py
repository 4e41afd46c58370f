"""Process-level speed settings: glibc's malloc tuned for PyTorch's CPU tensors.

Why by hand: PyTorch's CPU allocator has no cache; every tensor is a fresh ``malloc`` and
every free goes straight back to glibc. glibc serves large blocks with ``mmap`` and returns
freed memory to the kernel (``munmap``, heap trimming), so a forward pass over a batch of
4096 rows, whose intermediates are 10–30 MB each, page-faults and zero-fills every one of them
anew on every batch. On the 2-core development machine that made prediction 40% slower than
the arithmetic (36k vs 63k rows/s; ``csna bench throughput``). Intel's guides for CPU PyTorch
preload jemalloc or tcmalloc for this reason; a pip-installed tool cannot ask users to
``LD_PRELOAD`` anything, but glibc's own ``mallopt`` does the same job from inside the process:

- ``M_MMAP_THRESHOLD`` fixed at its largest value (32 MiB): blocks below it come from the
  heap, which keeps and reuses freed memory;
- ``M_TRIM_THRESHOLD`` 1 GiB and ``M_TOP_PAD`` 64 MiB: freed memory stays in the process
  instead of being handed back and faulted in again a millisecond later.

Memory that is freed is kept for reuse rather than returned, so the resident size stays near
its peak; the peak itself does not grow (measured in ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_malloc"]

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit systems
_TRIM_THRESHOLD = 1024 * 1024 * 1024
_TOP_PAD = 64 * 1024 * 1024

_applied: bool | None = None


def tune_malloc() -> bool:
    """Tune glibc's malloc for tensor-sized blocks, once per process.

    Does nothing (and returns ``False``) off glibc, when ``CSNA_MALLOC_TUNING=0``, or when the
    user already tunes malloc through ``MALLOC_*`` variables or ``GLIBC_TUNABLES`` (theirs
    win). Safe to call many times.

    Returns:
        Whether the settings are in effect.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or os.environ.get("CSNA_MALLOC_TUNING", "1") == "0":
        return False
    if "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # absent on musl and other C libraries  # noqa: B018
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
            (_M_TOP_PAD, _TOP_PAD),
        )
    )
    _applied = ok
    return ok
