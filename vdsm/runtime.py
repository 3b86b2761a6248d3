"""Process-level settings for CPU training, applied once by the runner and the benchmarks, and the
probe of the machine that every run and benchmark prints (so that a time says where it was measured)."""
import ctypes
import os
import platform
import sys
import time

__all__ = ["keep_freed_memory", "processor_name", "matmul_gflops", "machine_summary", "machine_line"]

# Blocks below this come from the reusable heap. 64 MB covers the activations of SVG's batch of
# 100; a larger value (1 GB was tried) also moves VDSM's few very large blocks to the heap, where
# fragmentation raised stage 1's peak memory from 4.5 to 5.6 GB at the reference config.
MMAP_THRESHOLD = 64 << 20


def keep_freed_memory():
    """Ask glibc's allocator to keep freed memory for reuse instead of returning it to the system.

    A training step allocates and frees gigabytes of activations; by default glibc serves
    large blocks with fresh ``mmap`` pages and unmaps them when freed, so every step pays
    about half a million page faults again (SVG-LP's reference config on a 2-core machine: ~0.5 M
    page faults per step saved by this setting, docs/journal.md, "Seconds per SVI step (re-measured 2026-11-22 ...)"). Freed memory stays with the process
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


def processor_name(device="cpu"):
    """The CPU's model name as the OS reports it (``/proc/cpuinfo``), or the CUDA device's name."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if not line.strip():   # the first processor's block is enough
                    break
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    if "cpu family" in fields and "model" in fields:   # "AMD EPYC" alone does not tell Zen 2 from Zen 5
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def matmul_gflops(device="cpu", dtype=None, n=512, seconds=0.25):
    """Measured rate of ``n`` x ``n`` matrix products on ``device`` in GFLOP/s, with the process's
    threads: fp32 by default, or ``dtype`` (e.g. bf16 for ``--amp``). Random numbers from a private
    generator, so the caller's streams are untouched. About ``seconds`` of work after one warm-up."""
    import torch

    device = torch.device(device)
    dtype = dtype or torch.float32
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=device).to(dtype)
    b = torch.randn(n, n, generator=g, device=device).to(dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        a @ b
        sync()
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds or done < 2:
            a @ b
            sync()
            done += 1
        elapsed = time.perf_counter() - started
    return 2 * n ** 3 * done / elapsed / 1e9


def machine_summary(device="cpu", amp=False):
    """What a measured time depends on, as plain data: processor, threads, the ATen CPU kernels in use,
    oneDNN's ISA limit if set, the fp32 matmul rate and, with ``amp``, the bf16 one."""
    import torch

    device = torch.device(device)
    summary = {"processor": processor_name(device), "device": device.type, "threads": torch.get_num_threads(),
               "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
               "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
               "fp32_matmul_gflops": round(matmul_gflops(device), 1)}
    if amp:
        summary["bf16_matmul_gflops"] = round(matmul_gflops(device, torch.bfloat16), 1)
    return summary


def machine_line(summary):
    """One line for a log: ``machine: AMD EPYC (cpu, 2 threads, AVX512 kernels): fp32 matmul 180 GFLOP/s``."""
    where = f"{summary['device']}, {summary['threads']} threads, {summary['cpu_kernels']} kernels"
    if summary.get("onednn_max_cpu_isa"):
        where += f", ONEDNN_MAX_CPU_ISA={summary['onednn_max_cpu_isa']}"
    line = f"machine: {summary['processor']} ({where}): fp32 matmul {summary['fp32_matmul_gflops']:.0f} GFLOP/s"
    if "bf16_matmul_gflops" in summary:
        line += f", bf16 {summary['bf16_matmul_gflops']:.0f} GFLOP/s"
        if summary["bf16_matmul_gflops"] < summary["fp32_matmul_gflops"]:   # e.g. no bf16 instructions (AVX2)
            slower = summary["fp32_matmul_gflops"] / max(summary["bf16_matmul_gflops"], 1e-3)
            line += f" ({slower:.1f}x slower than fp32 on this machine: --amp slows this run down; drop it)"
    return line
