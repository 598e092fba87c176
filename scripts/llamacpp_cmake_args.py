"""Print the CMAKE_ARGS that build llama-cpp-python for this machine's x86 CPU.

pip's default build compiles ggml with `-march=native`. On an Intel Xeon with AMX that also
compiles ggml's AMX backend, which repacks quantised weights (Q4_1, Q8_0, Q4_K…) and crashed
llama-cpp-python 0.3.36 in decode on every quantised GGUF (f32 and bf16 ran). So the build names
its instruction sets itself (`-DGGML_NATIVE=OFF`): each one the CPU's /proc/cpuinfo flags
list, AMX never. Every option is written ON or OFF, because with GGML_NATIVE=OFF ggml turns
SSE4.2, AVX, AVX2, BMI2, FMA and F16C on unless told otherwise.

Prints nothing (pip's default build) where there is no /proc/cpuinfo or it lists no x86 flags.

    python3 scripts/llamacpp_cmake_args.py [CPUINFO]   # default /proc/cpuinfo

Standard library only: the Makefile runs it before the virtual environment exists.
"""

from __future__ import annotations

import sys
from pathlib import Path

# ggml's CMake option → the /proc/cpuinfo flags a CPU needs for it.
ISA_OPTIONS = {
    "GGML_SSE42": ["sse4_2"],
    "GGML_AVX": ["avx"],
    "GGML_AVX2": ["avx2"],
    "GGML_BMI2": ["bmi2"],
    "GGML_FMA": ["fma"],
    "GGML_F16C": ["f16c"],
    "GGML_AVX_VNNI": ["avx_vnni"],
    # ggml's AVX512 compiles with -mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw.
    "GGML_AVX512": ["avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"],
    "GGML_AVX512_VBMI": ["avx512vbmi"],
    "GGML_AVX512_VNNI": ["avx512_vnni"],
    "GGML_AVX512_BF16": ["avx512_bf16"],
}
AVX512_EXTENSIONS = ("GGML_AVX512_VBMI", "GGML_AVX512_VNNI", "GGML_AVX512_BF16")
# Off whatever the CPU has: the AMX backend is what crashed (see above).
ALWAYS_OFF = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")


def cpu_flags(cpuinfo: str) -> set[str] | None:
    """The flags of the first processor in /proc/cpuinfo's text, or None if it lists none
    (not an x86 CPU: Arm's cpuinfo says "Features" instead)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return None


def cmake_args(flags: set[str]) -> list[str]:
    enabled = {option: all(f in flags for f in needs) for option, needs in ISA_OPTIONS.items()}
    for option in AVX512_EXTENSIONS:  # each extends AVX512F, which ggml must then compile too
        enabled[option] = enabled[option] and enabled["GGML_AVX512"]
    enabled |= dict.fromkeys(ALWAYS_OFF, False)
    return ["-DGGML_NATIVE=OFF"] + [f"-D{k}={'ON' if on else 'OFF'}" for k, on in enabled.items()]


def main(argv: list[str]) -> None:
    path = Path(argv[1] if len(argv) > 1 else "/proc/cpuinfo")
    flags = cpu_flags(path.read_text()) if path.exists() else None
    if flags is not None:
        print(" ".join(cmake_args(flags)))


if __name__ == "__main__":
    main(sys.argv)
