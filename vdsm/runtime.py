"""Process-level settings for CPU training, applied once by the runner and the benchmarks."""
import ctypes
import os
import sys

__all__ = ["keep_freed_memory"]

# Blocks below this come from the reusable heap. 64 MB covers the activations of SVG's batch of
# 100; a larger value (1 GB was tried) also moves VDSM's few very large blocks to the heap, where
# fragmentation raised stage 1's peak memory from 4.5 to 5.6 GB at the reference config.
MMAP_THRESHOLD = 64 << 20


def keep_freed_memory():
    """Ask glibc's allocator to keep freed memory for reuse instead of returning it to the system.

    A training step allocates and frees gigabytes of activations; by default glibc serves
    large blocks with fresh ``mmap`` pages and unmaps them when freed, so every step pays
    about half a million page faults again (SVG-LP's reference config on the 2-core machine of
    BENCHMARKS.md: 520-750k faults and 15-19 s for the networks' forward + backward, against
    60-190k faults and 12-13.5 s with this setting). Freed memory stays with the process
    until it exits.
    Returns True when the setting was applied (Linux with glibc), False elsewhere or when
    ``$VDSM_KEEP_FREED_MEMORY`` is ``0``.
    """
    if os.environ.get("VDSM_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (musl): leave it alone
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(libc.mallopt(m_trim_threshold, 1 << 34))
