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


def variants(M: int, is_complex: bool, reverse: bool, stages: int | None = None):
    """(kernel, constexprs, warps) as ``triton_scan._scan`` launches them on a GPU (``stages``
    overrides the table's software-pipeline depth, as bench/tune_triton.py does)."""
    chunk = ts.FIRST_ORDER_CHUNK_GPU if M == 1 else ts.CHUNK_GPU  # the longest; shorter ones compile alike
    stages = ts.LOOP_STAGES_GPU if stages is None else stages
    m_pad = triton.next_power_of_2(M)
    warps = ts._warps(M)
    summary, finish = (ts._first_order_summary, ts._first_order_finish) if M == 1 else (ts._chunk_summary, ts._chunk_finish)
    shared = dict(CHUNK=chunk, M_PAD=m_pad, STAGES=stages, IS_COMPLEX=is_complex, REVERSE=reverse)
    yield summary, shared, warps["summary"]
    for grad_a, per_sample in [(False, False)] + ([(True, False), (True, True)] if reverse else []):
        yield finish, dict(shared, GRAD_A=grad_a, GRAD_A_PER_SAMPLE=per_sample), warps["finish"]
    yield ts._carry_scan, dict(M_PAD=m_pad, IS_COMPLEX=is_complex), warps["carry"]
    yield ts._carry_compose, dict(M_PAD=m_pad, IS_COMPLEX=is_complex), warps["compose"]


def compile_one(kernel, pointer: str, constexprs: dict, warps: int) -> dict:
    compiled = triton.compile(source(kernel, pointer, constexprs), target=TARGET, options={"num_warps": warps, **ts._COMPILE})
    return {"kernel": kernel.__name__, "warps": warps, **resource_usage(compiled.asm["cubin"])}


def main(orders: list[int]) -> None:
    results = []
    for pointer in ("*fp32", "*bf16", "*fp64"):
        for M in orders:
            for is_complex in ([False] if pointer == "*bf16" else [False, True]):
                for reverse in (False, True):
                    for kernel, constexprs, warps in variants(M, is_complex, reverse):
                        carry_only = kernel in (ts._carry_scan, ts._carry_compose)
                        ptr = "*fp32" if carry_only and pointer == "*bf16" else pointer  # float32 carries
                        results.append({"pointer": pointer, "M": M, "complex": is_complex, "reverse": reverse,
                                        **compile_one(kernel, ptr, constexprs, warps)})
    # the software-pipelined loops that bench/tune_triton.py tries
    for M in orders:
        for reverse in (False, True):
            for kernel, constexprs, warps in variants(M, False, reverse, stages=4):
                if "STAGES" in constexprs and M > 1:
                    results.append({"pointer": "*fp32", "M": M, "complex": False, "reverse": reverse, "stages": 4,
                                    **compile_one(kernel, "*fp32", constexprs, warps)})
    json.dump({"triton": triton.__version__, "kernels": results}, sys.stdout)


if __name__ == "__main__":
    main([int(m) for m in sys.argv[1:]] or [1, 2, 16, 33])
