"""Host memory allocator settings for CPU training and generation.

glibc's ``malloc`` serves every block above 32 MB with its own ``mmap`` and hands it back to
the kernel on ``free``. A CPU training step allocates and frees several such blocks (full
logits are ``tokens x vocab x 4`` bytes: 300 MB for 16 x 96 tokens with SmolLM2's 49k
vocabulary), so every step faults its working set in again page by page, and in a virtual
machine each fault is expensive (``bench/allocator.py`` measures what it costs a LoRA SFT step;
the figures are in bench/README.md).

:func:`keep_freed_memory` tells glibc (through ``mallopt``, at run time) to serve large blocks
from its heap and never to trim the heap. After a step or two the heap holds the step's working
set and later steps fault nothing in. The cost: resident memory stays at the process's peak
instead of falling between steps (the peak itself does not grow). :func:`release_freed_memory` hands the
freed part back to the kernel at once; a pipeline calls it after each stage, so a stage's peak does not stay
with the process through the stages after it (two study units side by side were killed for memory that way).
It only acts on Linux with glibc, never when CUDA is in use (host memory is not the hot path
there), and never when ``OPENRFT_MALLOC=system`` or the user tunes malloc through the
environment (``MALLOC_*`` variables, ``GLIBC_TUNABLES`` with a ``malloc`` setting).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

logger = logging.getLogger(__name__)

ENV = "OPENRFT_MALLOC"
# mallopt parameter numbers from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = -1  # mallopt reads it as size_t: never trim the heap top

_applied: bool | None = None
_trim = None  # glibc's malloc_trim, once the setting is applied


def _user_tuned() -> str | None:
    if os.environ.get(ENV, "").strip().lower() in ("system", "default", "off", "0"):
        return f"{ENV}={os.environ[ENV]}"
    tuned = sorted(k for k in os.environ if k.startswith("MALLOC_"))
    if tuned:
        return ", ".join(tuned)
    if "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return None


def _cuda_in_use() -> bool:
    import torch

    return torch.cuda.is_available()


def kept_memory_status() -> bool | None:
    """Whether this process keeps freed memory: ``None`` until :func:`keep_freed_memory` was called, then its
    answer (``False`` when the system allocator was left alone)."""
    return _applied


def keep_freed_memory() -> bool:
    """Keep freed memory in the process (see the module doc); ``True`` if the setting is now active.

    Idempotent and cheap after the first call.
    """
    global _applied, _trim
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux"):
        return False
    reason = _user_tuned()
    if reason:
        logger.debug("allocator: left to the system (%s)", reason)
        return False
    if _cuda_in_use():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if _applied:
        _trim = libc.malloc_trim
        _trim.argtypes = [ctypes.c_size_t]
        _trim.restype = ctypes.c_int
        logger.debug("allocator: large blocks from the heap, freed memory kept (set %s=system to undo)", ENV)
    return _applied


def release_freed_memory() -> bool:
    """Hand the memory freed so far back to the kernel (glibc's ``malloc_trim``) where :func:`keep_freed_memory`
    keeps it; the next allocations fault their pages in again, once. ``True`` if memory was released."""
    return _trim is not None and bool(_trim(0))
