"""Compile every Triton kernel variant for sm_90 on a machine without a GPU; print JSON.

The interpreter accepts code that the compiler rejects, so this catches what the interpreter
tests cannot. Triton's wheel ships ptxas and cuobjdump, so compilation runs to a cubin whose
register and stack (spill) use cuobjdump reports. Run in a process without TRITON_INTERPRET
(``@triton.jit`` then builds compilable kernels); see tests/test_triton_compile.py.
"""
from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from allpole_triton.kernels import triton_scan as ts

TARGET = GPUTarget("cuda", 90, 32)
CUOBJDUMP = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def source(kernel, pointer: str, constexprs: dict) -> ASTSource:
    """Pointers (``*_ptr``) get one element type; every other runtime argument is i32."""
    names = kernel.arg_names
    signature = {
        name: "constexpr" if name in constexprs else pointer if name.endswith("_ptr") else "i32" for name in names
    }
    return ASTSource(fn=kernel, signature=signature, constexprs={(names.index(k),): v for k, v in constexprs.items()})


def resource_usage(cubin: bytes) -> dict[str, int]:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        dump = subprocess.run([str(CUOBJDUMP), "--dump-resource-usage", f.name], capture_output=True, text=True, check=True)
    found = re.search(r"REG:(\d+) STACK:(\d+)", dump.stdout)
    return {"registers": int(found.group(1)), "stack": int(found.group(2))}


def variants(M: int, is_complex: bool, reverse: bool):
    """(kernel, constexprs, warps) as ``triton_scan._scan`` launches them on a GPU."""
    chunk, _ = ts._launch_shape(type("cuda", (), {"type": "cuda"})(), M)
    m_pad = triton.next_power_of_2(M)
    warps = ts._warps(M)
    summary, finish = (ts._first_order_summary, ts._first_order_finish) if M == 1 else (ts._chunk_summary, ts._chunk_finish)
    shared = dict(CHUNK=chunk, M_PAD=m_pad, IS_COMPLEX=is_complex, REVERSE=reverse)
    yield summary, shared, warps["summary"]
    for grad_a, per_sample in [(False, False)] + ([(True, False), (True, True)] if reverse else []):
        yield finish, dict(shared, GRAD_A=grad_a, GRAD_A_PER_SAMPLE=per_sample), warps["finish"]
    for carry_kernel in (ts._carry_scan, ts._carry_compose):
        yield carry_kernel, dict(M_PAD=m_pad, IS_COMPLEX=is_complex), warps["carry"]


def main(orders: list[int]) -> None:
    results = []
    for pointer in ("*fp32", "*bf16", "*fp64"):
        for M in orders:
            for is_complex in ([False] if pointer == "*bf16" else [False, True]):
                for reverse in (False, True):
                    for kernel, constexprs, warps in variants(M, is_complex, reverse):
                        # carries are float32 for 16-bit inputs
                        carry_only = kernel in (ts._carry_scan, ts._carry_compose)
                        ptr = "*fp32" if carry_only and pointer == "*bf16" else pointer
                        compiled = triton.compile(source(kernel, ptr, constexprs), target=TARGET, options={"num_warps": warps, **ts._COMPILE})
                        results.append({
                            "kernel": kernel.__name__, "pointer": pointer, "M": M, "complex": is_complex,
                            "reverse": reverse, "warps": warps, **{k: v for k, v in constexprs.items() if k.startswith("GRAD")},
                            **resource_usage(compiled.asm["cubin"]),
                        })
    json.dump({"triton": triton.__version__, "kernels": results}, sys.stdout)


if __name__ == "__main__":
    main([int(m) for m in sys.argv[1:]] or [1, 2, 16, 33])
