"""The process keeps the memory a training step frees, for the next step to reuse.

glibc's malloc serves large blocks by `mmap` and returns them to the system on `free` (and trims
the heap's free top beyond a threshold), so every step's fresh weight mixtures, weight gradients
and activations fault their pages in again and the kernel zeroes them first: 36,000 page
faults per fused Deeplab-R34 search step, 3 with this, and the step 13–19 % faster (2 threads,
fresh processes side by side; docs/performance.md). PyTorch's CPU allocator has no cache of its
own; this is what jemalloc or tcmalloc would give, without preloading a library. The price: a
process's resident memory stays at its peak once reached. `AUTOMTL_KEEP_FREED_MEMORY=0` leaves
glibc's defaults.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's maximum: blocks of up to 32 MiB come from the heap
TRIM_THRESHOLD = 1 << 30  # free heap top kept before any is returned


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as above; whether it applied (False off glibc, or when switched
    off by the environment)."""
    if os.environ.get("AUTOMTL_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith(
            "linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
