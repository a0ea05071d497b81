"""Precision choices (quantart_cli.core.precision): whether the CPU computes bf16 natively."""

from __future__ import annotations

from quantart_cli.core import precision


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "_torch_reports_bf16", lambda: False)
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    for text, native in (
        ("processor : 0\nflags : fpu sse avx2 fma\n", False),
        ("flags\t: fpu avx512f avx512bw avx512_vnni\n", False),
        ("flags\t: fpu avx512f avx512_bf16\n", True),
        ("flags\t: fpu amx_tile amx_bf16\n", True),
        ("Features\t: fp asimd sve bf16 i8mm\n", True),
    ):
        cpuinfo.write_text(text)
        assert precision.cpu_has_native_bf16() is native, text
    cpuinfo.unlink()
    assert precision.cpu_has_native_bf16() is False  # nothing to read: not known to be fast
