"""Process-level settings for CPU training, applied once by the runner and the benchmarks."""
import ctypes
import sys

__all__ = ["keep_freed_memory"]


def keep_freed_memory():
    """Ask glibc's allocator to keep freed memory for reuse instead of returning it to the system.

    A training step allocates and frees gigabytes of activations; by default glibc serves
    blocks above 32 MB with fresh ``mmap`` pages and unmaps them when freed, so every step
    pays about half a million page faults again (SVG-LP's reference config: 520k faults and
    16 s per step, against 61k faults and 13.6 s with this setting, on the 2-core machine of
    BENCHMARKS.md). Peak memory is unchanged; the process keeps its peak until it exits.
    Returns True when the setting was applied (Linux with glibc), False elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (musl): leave it alone
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 34))
