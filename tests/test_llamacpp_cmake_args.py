"""scripts/llamacpp_cmake_args.py: the llama-cpp-python build flags chosen from /proc/cpuinfo."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "scripts" / "llamacpp_cmake_args.py"
spec = importlib.util.spec_from_file_location("llamacpp_cmake_args", SCRIPT)
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)

# `flags` lines of real CPUs (abridged to the instruction-set flags and a few others).
INTEL_SAPPHIRE_RAPIDS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
    "sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc pni pclmulqdq ssse3 fma cx16 pcid "
    "sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm "
    "3dnowprefetch fsgsbase bmi1 hle avx2 smep bmi2 erms invpcid rtm avx512f avx512dq rdseed adx "
    "smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 "
    "xsaves avx_vnni avx512_bf16 wbnoinvd arat avx512vbmi umip pku ospke waitpkg avx512_vbmi2 "
    "gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq la57 rdpid movdiri "
    "movdir64b fsrm md_clear serialize tsxldtrk amx_bf16 avx512_fp16 amx_tile amx_int8"
)
AMD_EPYC_GENOA = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
    "sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl pni "
    "pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand "
    "hypervisor lahf_lm cmp_legacy abm sse4a misalignsse 3dnowprefetch fsgsbase bmi1 avx2 smep "
    "bmi2 erms invpcid avx512f avx512dq adx smap avx512ifma clflushopt clwb avx512cd sha_ni "
    "avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni avx512_bf16 clzero arat "
    "avx512vbmi umip avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg "
    "avx512_vpopcntdq rdpid fsrm"
)
INTEL_HASWELL = (  # AVX2, no AVX-512
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
    "sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc pni pclmulqdq ssse3 fma cx16 pcid "
    "sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm fsgsbase "
    "bmi1 avx2 smep bmi2 erms invpcid xsaveopt arat"
)
NO_AVX = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov mmx fxsr sse sse2 pni"


def cpuinfo(flags: str) -> str:
    return f"processor\t: 0\nvendor_id\t: Whatever\nflags\t\t: {flags}\nbogomips\t: 4000\n"


def options(flags: str) -> dict[str, str]:
    args = script.cmake_args(script.cpu_flags(cpuinfo(flags)))
    assert all(a.startswith("-D") for a in args)
    return dict(a[2:].split("=") for a in args)


def enabled(flags: str) -> set[str]:
    return {k for k, v in options(flags).items() if v == "ON"}


AVX2_SET = {"GGML_SSE42", "GGML_AVX", "GGML_AVX2", "GGML_BMI2", "GGML_FMA", "GGML_F16C"}
AVX512_SET = {"GGML_AVX512", "GGML_AVX512_VBMI", "GGML_AVX512_VNNI", "GGML_AVX512_BF16"}


def test_intel_amx_gets_avx512_and_never_amx():
    chosen = options(INTEL_SAPPHIRE_RAPIDS)
    assert chosen["GGML_NATIVE"] == "OFF"  # -march=native would compile the AMX backend
    assert {chosen[k] for k in ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")} == {"OFF"}
    assert enabled(INTEL_SAPPHIRE_RAPIDS) == AVX2_SET | AVX512_SET | {"GGML_AVX_VNNI"}


def test_amd_avx512_gets_avx512():
    assert enabled(AMD_EPYC_GENOA) == AVX2_SET | AVX512_SET | {"GGML_AVX_VNNI"}


def test_avx2_only_gets_avx2_and_every_other_option_written_off():
    chosen = options(INTEL_HASWELL)
    assert enabled(INTEL_HASWELL) == AVX2_SET
    # ggml would turn AVX2 and friends on by itself with GGML_NATIVE=OFF: all must be explicit.
    assert set(chosen) == {"GGML_NATIVE", *script.ISA_OPTIONS, *script.ALWAYS_OFF}


def test_a_cpu_without_avx_gets_none_of_ggml_s_defaults():
    assert enabled(NO_AVX) == set()


def test_avx512_extensions_need_the_avx512_foundation():
    # A Xeon Phi-like CPU: avx512f and avx512cd but not vl/dq/bw, which ggml's AVX512 compiles.
    flags = INTEL_HASWELL + " avx512f avx512cd avx512_vnni"
    assert enabled(flags) == AVX2_SET


def test_only_the_first_processor_s_flags_count_and_arm_has_none():
    text = cpuinfo(INTEL_HASWELL) + "\n" + cpuinfo(NO_AVX)
    assert script.cpu_flags(text) == set(INTEL_HASWELL.split())
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"
    assert script.cpu_flags(arm) is None


@pytest.mark.parametrize(
    ("text", "printed"),
    [
        (cpuinfo(INTEL_HASWELL), "-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON"),
        ("processor\t: 0\nFeatures\t: fp asimd\n", ""),  # Arm: pip's default build
        (None, ""),  # no /proc/cpuinfo: pip's default build
    ],
)
def test_the_script_prints_the_args_or_nothing(tmp_path, capsys, text, printed):
    path = tmp_path / "cpuinfo"
    if text is not None:
        path.write_text(text)
    script.main(["llamacpp_cmake_args.py", str(path)])
    out = capsys.readouterr().out
    assert out.startswith(printed) and (out.endswith("-DGGML_AMX_BF16=OFF\n") or not printed)
    assert bool(out) == bool(printed)
