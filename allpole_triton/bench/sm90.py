"""Compile the Triton launches of a pass for sm_90 (H100/H200) on a machine without a GPU.

Triton's wheel ships ptxas and cuobjdump, so a launch planned on the meta device
(``triton_scan.plan``) compiles to a cubin whose registers, stack and SASS can be read here. Used by
the compile test (tests/test_triton_compile.py) and the performance model (``allpole-bench --model``).
Run without TRITON_INTERPRET: kernels decorated under the interpreter cannot be compiled.
"""
from __future__ import annotations

import pathlib
import re
import subprocess
import tempfile
from dataclasses import dataclass, field

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TARGET = GPUTarget("cuda", 90, 32)
_BIN = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
_POINTER = {torch.float32: "*fp32", torch.float64: "*fp64", torch.float16: "*fp16", torch.bfloat16: "*bf16",
            torch.int32: "*i32"}
_INSTRUCTION = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


def toolchain_available() -> bool:
    return (_BIN / "ptxas").exists() and (_BIN / "cuobjdump").exists()


@dataclass
class Compiled:
    """One compiled launch: its resource use, SASS and where its loops are."""

    name: str
    registers: int
    stack: int
    sass: list[tuple[int, str]]  # (address, instruction)
    ttgir: str
    ptx: str
    spans: list[tuple[int, int]] = field(default_factory=list)  # each loop's first and last index into sass

    @property
    def main_loop(self) -> list[str]:
        """The loop that starts last in program order: the lane loop of the lane kernels (a fused
        carry's piece loop comes before it), the walk of the carries."""
        return self.body(*max(self.spans)) if self.spans else []

    @property
    def reachable(self) -> list[str]:
        """The instructions a thread can issue: the SASS less its tail of padding, the NOPs that align
        the end of the code and the branch to itself before them (a trap no path reaches: the
        last EXIT comes first). Every other instruction counts, branches not taken among them."""
        end = len(self.sass)
        while end and (self.sass[end - 1][1] == "NOP" or _branch_target(self.sass[end - 1][1]) == self.sass[end - 1][0]):
            end -= 1
        return [i for _, i in self.sass[:end]]

    def body(self, first: int, last: int) -> list[str]:
        """The instructions of one loop, ``first`` to ``last`` (a span of ``spans``)."""
        return [i for _, i in self.sass[first:last + 1]]

    def opcodes(self, body: list[str]) -> list[str]:
        return [ins.split()[0] if not ins.startswith("@") else ins.split()[1] for ins in body]


def signature(launch, ones_as_constants: bool = False) -> ASTSource:
    """The launch's compile signature. ``ones_as_constants``: every integer argument becomes the
    constant 1, as Inductor compiles an argument equal to 1 at a launch (its copy of a kernel drops
    ``do_not_specialize``), so that code which only compiles on a runtime value is caught."""
    names = launch.kernel.arg_names
    sig = {}
    values = dict(zip([n for n in names if n not in launch.constexprs], launch.args))
    ones = {name: 1 for name, value in values.items() if ones_as_constants and not isinstance(value, torch.Tensor)}
    for name in names:
        if name in launch.constexprs or name in ones:
            sig[name] = "constexpr"
        else:
            value = values[name]
            if isinstance(value, torch.Tensor):
                sig[name] = _POINTER[value.dtype]
            else:
                sig[name] = "i64" if abs(int(value)) >= 2**31 else "i32"
    constexprs = {(names.index(k),): v for k, v in {**launch.constexprs, **ones}.items() if k in names}
    # a launch specialises pointers whose address is a multiple of 16 (every fresh torch tensor; a
    # view at an offset may not be), and alignment changes how Triton vectorises and lays out tiles
    aligned = {(names.index(name),): [["tt.divisibility", 16]] for name, value in values.items()
               if isinstance(value, torch.Tensor) and value.storage_offset() * value.element_size() % 16 == 0}
    return ASTSource(fn=launch.kernel, signature=sig, constexprs=constexprs, attrs=aligned)


def variant_key(launch) -> tuple:
    """What makes two launches one compiled variant: kernel, constexprs, warps, tensor dtypes."""
    tensors = tuple(str(t.dtype) for t in launch.args if isinstance(t, torch.Tensor))
    return launch.kernel.__name__, tuple(sorted((k, str(v)) for k, v in launch.constexprs.items())), launch.num_warps, tensors


def _cuobjdump(cubin: bytes, *flags: str) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([str(_BIN / "cuobjdump"), *flags, f.name], capture_output=True, text=True, check=True).stdout


def compile_launch(launch, ones_as_constants: bool = False) -> Compiled:
    options = {"num_warps": launch.num_warps}
    options.update({k: v for k, v in launch.constexprs.items() if k == "enable_fp_fusion"})
    source = signature(_without_options(launch), ones_as_constants)
    compiled = triton.compile(source, target=TARGET, options=options)
    cubin = compiled.asm["cubin"]
    usage = re.search(r"REG:(\d+) STACK:(\d+)", _cuobjdump(cubin, "--dump-resource-usage"))
    sass = [(int(m.group(1), 16), m.group(2)) for line in _cuobjdump(cubin, "-sass").splitlines()
            if (m := _INSTRUCTION.match(line))]
    result = Compiled(launch.kernel.__name__, int(usage.group(1)), int(usage.group(2)), sass,
                      compiled.asm.get("ttgir", ""), compiled.asm.get("ptx", ""))
    result.spans = loop_spans(sass)
    return result


def front_end(launch, ones_as_constants: bool = False) -> None:
    """Run Triton's front end alone (Python source to TTIR) on the launch: what fails to compile
    for a reason in the source (an unknown name, a method called on a constant) fails here, in a
    fraction of a whole compile. Raises as ``triton.compile`` would."""
    from triton._C.libtriton import ir
    from triton.compiler.compiler import make_backend

    source = signature(_without_options(launch), ones_as_constants)
    backend = make_backend(TARGET)
    options = backend.parse_options({"num_warps": launch.num_warps})
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    source.make_ir(TARGET, options, backend.get_codegen_implementation(options), backend.get_module_map(), context)


def _without_options(launch):
    """The launch with compile options (enable_fp_fusion) taken out of its constexprs."""
    from copy import copy

    clean = copy(launch)
    clean.constexprs = {k: v for k, v in launch.constexprs.items() if k != "enable_fp_fusion"}
    return clean


def _branch_target(ins: str) -> int | None:
    """The address a BRA instruction jumps to, or None for any other instruction."""
    m = re.search(r"BRA\s+(?:`?\(?\.?L?_?x?_?\d*\)?\s*)?0x([0-9a-f]+)", ins)
    return int(m.group(1), 16) if m else None


def loop_spans(sass: list[tuple[int, str]]) -> list[tuple[int, int]]:
    """(first, last) indices into ``sass`` of every loop: a branch back to a lower address."""
    addresses = [a for a, _ in sass]
    spans = []
    for index, (address, ins) in enumerate(sass):
        target = _branch_target(ins)
        if target is None:
            continue
        if target < address and target in addresses:
            spans.append((addresses.index(target), index))
    return spans
