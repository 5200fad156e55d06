"""The CPU features that decide which int8 kernels onnxruntime and LiteRT (XNNPACK) take,
and the kernel path they add up to. Pure Python (ctypes); imports no runtime.

The features are read the way the runtimes' own dispatchers read them -- the CPUID
instruction on x86, the kernel's hardware capabilities (getauxval) on Linux/Android ARM,
sysctl on Apple silicon -- so an emulated CPU (qemu-user) reports what the emulator
offers, not the host's /proc/cpuinfo. Names follow Linux's /proc/cpuinfo flags.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from functools import lru_cache

from .errors import UserError

# Kernel paths: the int8 arithmetic a CPU class gets, one id each (used by the default
# model choice, the INT8 kernel-path matrix and the benchmark folder names).
KERNEL_PATHS: dict[str, str] = {
    "x86-sse": "x86-64 with SSE4.2 but no AVX2 (the least numpy's and onnxruntime's "
               "wheels run on)",
    "x86-avx2": "x86 AVX2 without VNNI: onnxruntime's U8S8 kernels add pairs of uint8 x "
                "int8 products into a saturating int16 (vpmaddubsw)",
    "x86-avx512": "x86 AVX-512BW without VNNI: the same saturating int16 pairs, 512 bits wide",
    "x86-vnni": "x86 with AVX-512 VNNI or AVX-VNNI: int8 dot products into int32 (vpdpbusd)",
    "x86-amx": "x86 with AMX-INT8 tiles (and AVX-512 VNNI)",
    "arm64-neon": "Armv8.0 NEON without dot product (Cortex-A53/A72: Raspberry Pi 3/4)",
    "arm64-dotprod": "Armv8.2 dot product (Cortex-A76 and later: Raspberry Pi 5, most phones)",
    "arm64-i8mm": "Armv8.6 int8 matrix multiply (i8mm) and dot product, no SVE",
    "arm64-sve": "SVE / SVE2 (Armv9 cores: Cortex-A510/A710/X2 and later, Neoverse V1/N2)",
    "unknown": "a CPU whose int8 kernels are not characterised",
}

_X86 = ("x86_64", "amd64", "i386", "i686", "x86")
_ARM64 = ("aarch64", "arm64")

# x86-64 machine code: cpuid(leaf=edi, subleaf=esi) -> eax, ebx, ecx, edx stored at [rdx]
# (System V ABI; rbx is callee-saved, hence the push/pop).
_CPUID_CODE = bytes((
    0x53,                    # push rbx
    0x89, 0xF8,              # mov eax, edi
    0x89, 0xF1,              # mov ecx, esi
    0x49, 0x89, 0xD0,        # mov r8, rdx
    0x0F, 0xA2,              # cpuid
    0x41, 0x89, 0x00,        # mov [r8], eax
    0x41, 0x89, 0x58, 0x04,  # mov [r8+4], ebx
    0x41, 0x89, 0x48, 0x08,  # mov [r8+8], ecx
    0x41, 0x89, 0x50, 0x0C,  # mov [r8+12], edx
    0x5B,                    # pop rbx
    0xC3,                    # ret
))


def _cpuid_reader():  # -> Callable[[int, int], tuple[int, int, int, int]] | None
    """A function running CPUID in this process, or None where executable memory cannot
    be mapped (hardened kernels) or the ABI is not System V x86-64."""
    if platform.machine().lower() not in ("x86_64", "amd64") or sys.platform == "win32":
        return None
    import mmap

    try:
        page = mmap.mmap(-1, mmap.PAGESIZE,
                         prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError, AttributeError):
        return None
    page.write(_CPUID_CODE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
    fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p)(addr)

    def cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        regs = (ctypes.c_uint32 * 4)()
        fn(leaf, subleaf, ctypes.addressof(regs))
        _keep = page  # noqa: F841 - the code page lives as long as this function
        return regs[0], regs[1], regs[2], regs[3]

    return cpuid


def _x86_features() -> tuple[frozenset[str], str]:
    cpuid = _cpuid_reader()
    if cpuid is None:
        return _proc_cpuinfo_flags(), "/proc/cpuinfo"
    bit = lambda reg, n: bool(reg >> n & 1)  # noqa: E731
    top = cpuid(0)[0]
    _, _, c1, _ = cpuid(1)
    a7, b7, c7, d7 = cpuid(7, 0) if top >= 7 else (0, 0, 0, 0)
    a71 = cpuid(7, 1)[0] if top >= 7 and a7 >= 1 else 0
    found = {
        "ssse3": bit(c1, 9), "sse4_1": bit(c1, 19), "avx": bit(c1, 28), "avx2": bit(b7, 5),
        "avx512f": bit(b7, 16), "avx512bw": bit(b7, 30), "avx512_vnni": bit(c7, 11),
        "avx_vnni": bit(a71, 4), "amx_tile": bit(d7, 24), "amx_int8": bit(d7, 25),
    }
    return frozenset(k for k, v in found.items() if v), "cpuid"


def _proc_cpuinfo_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


# Linux arm64 hwcaps (uapi/asm/hwcap.h): AT_HWCAP bits, AT_HWCAP2 bits.
_AT_HWCAP, _AT_HWCAP2 = 16, 26
_HWCAP = {"asimd": 1, "asimddp": 20, "sve": 22}
_HWCAP2 = {"sve2": 1, "i8mm": 13}


def _arm64_features() -> tuple[frozenset[str], str]:
    if sys.platform == "darwin":
        libc = ctypes.CDLL(None)
        found = {"asimd"}
        for name, flag in (("hw.optional.arm.FEAT_DotProd", "asimddp"),
                           ("hw.optional.arm.FEAT_I8MM", "i8mm")):
            value, size = ctypes.c_int(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_int))
            if libc.sysctlbyname(name.encode(), ctypes.byref(value), ctypes.byref(size),
                                 None, 0) == 0 and value.value:
                found.add(flag)
        return frozenset(found), "sysctl"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        getauxval = libc.getauxval
    except (OSError, AttributeError):
        return _proc_cpuinfo_flags(), "/proc/cpuinfo"
    getauxval.restype = ctypes.c_ulong
    getauxval.argtypes = [ctypes.c_ulong]
    hw, hw2 = int(getauxval(_AT_HWCAP)), int(getauxval(_AT_HWCAP2))
    found = {k for k, b in _HWCAP.items() if hw >> b & 1}
    found |= {k for k, b in _HWCAP2.items() if hw2 >> b & 1}
    return frozenset(found), "getauxval"


@lru_cache(maxsize=1)
def cpu_features() -> tuple[str, frozenset[str], str]:
    """(machine, features, source): the architecture as platform.machine() names it
    (lower case), the int8-relevant CPU features this process sees, and how they were
    read ("cpuid", "getauxval", "sysctl", "/proc/cpuinfo" or "none")."""
    machine = platform.machine().lower()
    if machine in _X86:
        return (machine, *_x86_features())
    if machine in _ARM64:
        return (machine, *_arm64_features())
    return machine, frozenset(), "none"


def kernel_path(machine: str, features: frozenset[str] | set[str]) -> str:
    """The KERNEL_PATHS id of a CPU with `features` (Linux flag names)."""
    if machine in _X86:
        if "amx_int8" in features:
            return "x86-amx"
        if "avx512_vnni" in features or "avx_vnni" in features:
            return "x86-vnni"
        if "avx512bw" in features:
            return "x86-avx512"
        if "avx2" in features:
            return "x86-avx2"
        return "x86-sse"
    if machine in _ARM64:
        if "sve" in features:
            return "arm64-sve"
        if "i8mm" in features:
            return "arm64-i8mm"
        if "asimddp" in features:
            return "arm64-dotprod"
        return "arm64-neon"
    return "unknown"


def this_kernel_path() -> str:
    """The kernel path of the CPU this process runs on; the environment variable
    RDSRN_KERNEL_PATH (a KERNEL_PATHS id) overrides the detection."""
    override = os.environ.get("RDSRN_KERNEL_PATH")
    if override:
        if override not in KERNEL_PATHS:
            raise UserError(f"RDSRN_KERNEL_PATH={override!r}: not a kernel path "
                            f"(one of {', '.join(KERNEL_PATHS)})")
        return override
    machine, features, _ = cpu_features()
    return kernel_path(machine, features)
