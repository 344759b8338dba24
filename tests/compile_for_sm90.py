"""Compile every Triton launch variant for sm_90 on a machine without a GPU; print JSON.

The interpreter accepts code that the compiler rejects, and runs none of the compiler's rewrites,
so this catches what the interpreter tests cannot: compile errors, register spills, and any
product that the compiler turned into a TF32 tensor-core dot (Triton 3.6, the GPU machines'
version, rewrites broadcast-multiply-sums into ``tt.dot`` with ``inputPrecision = tf32``).
The launches come from ``triton_scan.plan`` on the meta device, so they are exactly what runs.
Run in a process without TRITON_INTERPRET; ``python tests/compile_for_sm90.py [--quick]``.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import sys
import tempfile
import time
from copy import copy as clone

import torch
import triton

from allpole_triton.bench import inductor_source, model, sm90
from allpole_triton.kernels import triton_recurrence, triton_scan

META = torch.device("meta")
# (rows, T): many chunks (summary + carry + finish; at M=1 the carry fused into the finish), rows of
# a few chunks (short orders: one block, the carry fused into the finish), and few lanes (one-warp
# programs: the lane kernels' and the short-order carry's)
SHAPES = [(1, 1 << 20), (1 << 14, 4096), (1, 4096)]
FEW_BLOCKS = (16, 1 << 16)  # short orders: 64 blocks a row, the carry fused into the finish (runs of 2)
# one row of 255 one-warp blocks: the fused carry's longest runs (8 maps a lane at M=2, 32 at M=1;
# rows whose maps fit two a lane take FUSED_SHORT_RUN, which every other shape here does)
LONGEST_RUNS = (1, 1 << 18)
# real M=4: more blocks a row than even four-warp ones fuse, the carry a launch (complex M=4's always
# is one, but its carry spills 376 B at 128 lanes, as it did before: in neither set, left alone)
MANY_BLOCKS = (1, 1 << 28)  # (M=4's rows fuse their carry up to ~2^28 samples: chunks of 4096 from there)


def pass_launches(dtype, M: int, reverse: bool, layout: str, grad_a: str, rows: int, T: int):
    """The launches of one pass, planned as a GPU with 132 SMs would run them."""
    a_shape = (rows, 1 if layout == "constant" else T, M)
    a = torch.empty(a_shape, dtype=dtype, device=META)
    if layout == "strided":
        a = torch.empty(rows, M, T, dtype=dtype, device=META).transpose(1, 2)
    u = torch.empty(rows, T, dtype=dtype, device=META)
    zi = torch.empty(rows, M, dtype=dtype, device=META)
    extra = {}
    if reverse:
        extra = dict(tail=torch.empty_like(zi), y=torch.empty_like(u),
                     grad_a=torch.empty(a_shape, dtype=dtype, device=META) if grad_a == "yes" else None)
    return triton_scan.plan(u, a, zi, torch.empty_like(u), reverse=reverse, sms=132, **extra)[0]


def dense_launches(dtype, M: int, rows: int, T: int):
    """The launches of linear_recurrence's dense Triton scan (real order M), as a GPU would run them."""
    u = torch.empty(rows, T, M, dtype=dtype, device=META)
    A = torch.empty(rows, T, M, M, dtype=dtype, device=META)
    return triton_recurrence.plan(A, u, torch.empty(rows, M, dtype=dtype, device=META), torch.empty_like(u), sms=132)


# linear_recurrence's dense scan: (dtype, real order up to triton_recurrence.MAX_ORDER = 16; a
# complex recurrence of order 8 runs as the real one of order 16)
DENSE = [(torch.float32, 3), (torch.float32, 16)]
DENSE_WIDE = DENSE + [(torch.float32, 5), (torch.float32, 8), (torch.float64, 4), (torch.float64, 16), (torch.float16, 8)]


def configurations(quick: bool):
    """Every kernel and flag combination at least once (quick: what CI compiles, with each of the
    two Tritons), or the wider set (``python tests/compile_for_sm90.py``, by hand: a few minutes)."""
    if quick:  # long orders at 16; non-powers of two at 3 (strided)
        for M in (1, 2, 16):
            yield torch.float32, M, False, "contiguous", "no"
            yield torch.float32, M, True, "contiguous", "yes"
        yield torch.float32, 2, True, "constant", "yes"
        yield torch.float32, 16, False, "constant", "no"  # held in registers: spilled 4768 B reloading them
        yield torch.float32, 17, False, "constant", "no"  # rotated a slot a step (_next_slots), summary too
        yield torch.float32, 3, True, "strided", "no"
        yield torch.complex64, 2, True, "contiguous", "yes"
        yield torch.bfloat16, 2, False, "contiguous", "no"  # float64 (no TF32 possible): the full set only
        return
    for M in (1, 2, 3, 4, 5, 8, 16, 33):
        for reverse, grad_a in [(False, "no"), (True, "yes"), (True, "no")]:
            yield torch.float32, M, reverse, "contiguous", grad_a
        yield torch.float32, M, True, "constant", "yes"
        yield torch.float32, M, False, "constant", "no"  # held in registers from before the loop
    for M in (2, 5, 16):
        for reverse in (False, True):
            yield torch.float32, M, reverse, "strided", "yes" if reverse else "no"
            for dtype in (torch.complex64, torch.bfloat16, torch.float64):
                yield dtype, M, reverse, "contiguous", "yes" if reverse else "no"


TF32 = re.compile(r"tf32|HMMA\.[0-9]+\.F32\.TF32", re.IGNORECASE)
_DEFINITION = re.compile(r"^\s*(%[\w.]+)(?::\d+)?\s*=\s*(\"?[\w.]+\"?)(.*)$")
_VALUE = re.compile(r"%[\w.]+")
_INT32 = re.compile(r"^(?:i32|tensor<(?:\d+x)+i32\b.*>)$")
_PRODUCTS = ("arith.muli", "arith.shli")
_CHUNK_LOOP = re.compile(r"scf\.for (%[\w.]+) = %\w+ to %chunk_len\b")
_INT_CONSTANT = re.compile(r"(%[\w.]+) = arith\.constant (?:dense<)?(-?\d+)>? : (?:i32|tensor<[^>]*xi32)")
STEP_FACTOR_MAX = 16  # the largest order whose coefficient rows step by t0 x M


def _top_level_types(types: str) -> list[str]:
    """``a, b`` split at the commas outside angle brackets (tensor types carry layouts)."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(types):
        depth += c == "<"
        depth -= c == ">"
        if c == "," and depth == 0:
            parts.append(types[start:i].strip())
            start = i + 1
    return parts + [types[start:].strip()]


def narrow_runtime_offsets(ir: str) -> list[str]:
    """The ``tt.addptr`` lines of Triton IR whose offset can wrap past 2^31 elements on a large
    input: a 32-bit offset that depends on a runtime value (a kernel argument, program id, loop
    variable or load), or a 64-bit one widened from a 32-bit product of runtime values (it wrapped
    before the widening). 32-bit values built from constants and ``tl.arange`` alone stay small;
    32-bit sums of runtime values are let through once widened (indices within a row, bounded by
    its 32-bit length); so is a 32-bit body step, the variable of a loop over a chunk (up to the
    argument chunk_len) negated or times one constant of at most STEP_FACTOR_MAX (triton_tiles'
    load_rows: the plan keeps a chunk times M under 2^31). Triton 3.6 reuses names across regions
    (the single-pass finish's two chunk loops define the same ones), so each use reads the latest
    definition of a name above it."""
    definitions: dict[str, list[tuple[int, str, list[str]]]] = {}  # name -> (line, op, operands), in order
    loop_variables = set(_CHUNK_LOOP.findall(ir))
    constants = {name: abs(int(value)) for name, value in _INT_CONSTANT.findall(ir)}
    lines = ir.splitlines()
    for number, line in enumerate(lines):
        if m := _DEFINITION.match(line):
            operands = m.group(3).split(" loc(")[0].split(" : ")[0]
            definitions.setdefault(m.group(1), []).append((number, m.group(2).strip('"'), _VALUE.findall(operands)))

    def definition(name: str, use: int) -> tuple[int, str, list[str]] | None:
        """The definition of ``name`` that a use on line ``use`` reads: the latest one above it."""
        above = [d for d in definitions.get(name, ()) if d[0] < use]
        return above[-1] if above else None

    static: dict[tuple[str, int], bool] = {}

    def is_static(name: str, use: int) -> bool:
        found = definition(name, use)
        key = (name, found[0] if found else -1)
        if key not in static:
            static[key] = False  # arguments and loop-carried values are defined by no line
            if found is not None:
                number, op, operands = found
                static[key] = op in ("arith.constant", "tt.make_range") or (
                    op not in ("tt.load", "tt.get_program_id") and bool(operands)
                    and all(is_static(o, number) for o in operands))
        return static[key]

    def is_loop_step(name: str, use: int, factor: int = 1) -> bool:
        """A chunk loop's variable, splat, negated (0 - t) or times one small constant."""
        if name in loop_variables:
            return factor <= STEP_FACTOR_MAX
        found = definition(name, use)
        if found is None:
            return False
        number, op, operands = found
        if op in ("tt.splat", "tt.broadcast") and len(operands) == 1:
            return is_loop_step(operands[0], number, factor)
        if op == "arith.subi" and len(operands) == 2:
            return constants.get(operands[0]) == 0 and is_loop_step(operands[1], number, factor)
        if op == "arith.muli" and len(operands) == 2 and factor == 1:
            for step, constant in (operands, operands[::-1]):
                if constant in constants and is_loop_step(step, number, max(constants[constant], 1)):
                    return True
        return False

    def widened_wrap(name: str, use: int, seen: set) -> bool:
        """Whether ``name`` (64-bit) widens a 32-bit runtime product anywhere up its chain."""
        found = definition(name, use)
        if found is None or (name, found[0]) in seen:
            return False
        seen.add((name, found[0]))
        number, op, operands = found
        if op in ("arith.extsi", "arith.extui"):
            source = definition(operands[0], number)
            return source is not None and source[1] in _PRODUCTS and not is_static(operands[0], number)
        return op != "tt.load" and any(widened_wrap(o, number, seen) for o in operands)

    flagged = []
    for number, line in enumerate(lines):
        body = line.split(" loc(")[0].strip()
        if "tt.addptr" not in body:
            continue
        offset_type = _top_level_types(body.rsplit(" : ", 1)[1])[-1]
        offset = _VALUE.findall(body.split("tt.addptr", 1)[1].split(" : ")[0])[1]
        if (_INT32.match(offset_type) and not (is_static(offset, number) or is_loop_step(offset, number))
                or widened_wrap(offset, number, set())):
            flagged.append(body)
    return flagged


# shared-memory round trips and warp shuffles: the cost of a tile axis spread over a warp
CROSS_LANE = ("LDS", "STS", "BAR", "SHFL")


def inductor_copy(launch, folder: pathlib.Path, copies: dict):
    """The launch with Inductor's copy of its kernel (what torch.compile compiles, see
    allpole_triton.bench.inductor_source), each kernel copied once into ``copies``."""
    name = launch.kernel.__name__
    if name not in copies:
        copies[name] = getattr(inductor_source.regenerate(launch.kernel, folder), name)
    copy = clone(launch)
    copy.kernel = copies[name]
    return copy


def front_end_error(launch, ones_as_constants: bool) -> str:
    """Triton's front end on the launch (sm90.front_end): "" where it passes, else the error."""
    try:
        sm90.front_end(launch, ones_as_constants)
    except Exception as error:  # noqa: BLE001 - reported per variant, checked by the test
        while error.__cause__ is not None or error.__context__ is not None:  # the root cause
            error = error.__cause__ or error.__context__
        return f"{type(error).__name__}: {str(error)[:200]}"
    return ""


def main(quick: bool) -> None:
    seen, results, copies = set(), [], {}
    folder = pathlib.Path(tempfile.mkdtemp(prefix="allpole-inductor-"))
    # quick: the first shape (its short orders' carry fused into the finish, in blocks of four warps:
    # scan_group), fused finishes of one-warp blocks at runs of 2 (the many-row shape where real
    # M=2's rows hold a few blocks) and of 8 (LONGEST_RUNS), and the short-order carry launch
    # (MANY_BLOCKS)
    scans = [((dtype, M, reverse, layout, grad_a), rows, T, pass_launches(dtype, M, reverse, layout, grad_a, rows, T))
             for dtype, M, reverse, layout, grad_a in configurations(quick)
             for rows, T in (SHAPES[:1] if quick else SHAPES + [LONGEST_RUNS])]
    if quick:
        for shape in (FEW_BLOCKS, LONGEST_RUNS):
            scans.append(((torch.float32, 2, True, "contiguous", "yes"), *shape,
                          pass_launches(torch.float32, 2, True, "contiguous", "yes", *shape)))
        scans.append(((torch.float32, 4, False, "contiguous", "no"), *MANY_BLOCKS,
                      pass_launches(torch.float32, 4, False, "contiguous", "no", *MANY_BLOCKS)))
        # the heaviest four-warp fused carries: real M=4 on all 128 lanes, the complex M=3 adjoint
        for config in [(torch.float32, 4, False, "contiguous", "no"), (torch.complex64, 3, True, "contiguous", "yes")]:
            scans.append((config, *SHAPES[0], pass_launches(*config, *SHAPES[0])))
        # the single pass (triton_scan.single_pass, opt-in): M=2 forward and backward on one-warp
        # blocks, M=1 forward on four-warp ones
        os.environ["ALLPOLE_TRITON_LAUNCH"] = "single=1"
        for config, shape in [((torch.float32, 2, False, "contiguous", "no"), FEW_BLOCKS),
                              ((torch.float32, 2, True, "contiguous", "yes"), FEW_BLOCKS),
                              ((torch.float32, 1, False, "contiguous", "no"), SHAPES[0])]:
            scans.append((config, *shape, pass_launches(*config, *shape)))
        del os.environ["ALLPOLE_TRITON_LAUNCH"]
    # quick: the chunked shape only (its summary, carry and finish; one-warp programs)
    scans += [((dtype, M, False, "contiguous", "no"), rows, T, dense_launches(dtype, M, rows, T))
              for dtype, M in (DENSE if quick else DENSE_WIDE) for rows, T in (SHAPES[:1] if quick else SHAPES)]
    for (dtype, M, reverse, layout, grad_a), rows, T, launches in scans:
        for launch in launches:
            key = sm90.variant_key(launch)
            if key in seen:
                continue
            seen.add(key)
            began = time.perf_counter()
            compiled = sm90.compile_launch(launch)
            tf32 = sorted(set(TF32.findall(compiled.ttgir + compiled.ptx + "\n".join(i for _, i in compiled.sass))))
            # the loops the model counts per iteration (model.lane_loops): the main loop, or both of a
            # long-order summary's (a fused carry's piece loop, before the lane loop, scans across
            # lanes by design)
            try:
                lane_loops, loops_error = model.lane_loops(launch, compiled), ""
            except ValueError as error:  # reported, and failed by the compile test
                lane_loops, loops_error = [], str(error)
            last_loop, _, earlier_loops = model.global_wavefronts(compiled.ttgir, launch.num_warps)
            bodies = [compiled.body(first, last) for first, last, _ in lane_loops]
            in_lane_loops = compiled.opcodes([i for body in bodies for i in body])
            results.append({
                "kernel": compiled.name, "dtype": str(dtype), "M": M, "reverse": reverse, "layout": layout,
                "grad_a": grad_a, "shape": [rows, T], "warps": launch.num_warps,
                "constexprs": {k: str(v) for k, v in launch.constexprs.items()},
                "registers": compiled.registers, "stack": compiled.stack, "tf32": tf32,
                "narrow_offsets": narrow_runtime_offsets(compiled.ttgir),
                "loop_instructions": len(compiled.main_loop),
                # each lane loop's global loads per iteration, and the share of the programs that run it
                "lane_loops": [(model._count(body, model.GLOBAL_LOADS), share)
                               for body, (_, _, share) in zip(bodies, lane_loops)],
                "lane_loops_error": loops_error,
                # L1 wavefronts per iteration of each top-level TTGIR loop, in program order
                "ttgir_loop_wavefronts": earlier_loops + [last_loop],
                "cross_lane_in_lane_loops": sum(op.split(".")[0] in CROSS_LANE for op in in_lane_loops),
                "shuffles_in_lane_loops": sum(op.startswith("SHFL") for op in in_lane_loops),
                # the first variant of each kernel: its Inductor copy's SASS too (None: not compared)
                "inductor_copy_same_sass": (None if launch.kernel.__name__ in copies
                                            else sm90.compile_launch(inductor_copy(launch, folder, copies)).sass
                                            == compiled.sass),
                # every variant: the copy's front end with its integer arguments as the constant 1,
                # as Inductor compiles an argument equal to 1 (a unit stride: transposed or sliced a)
                "inductor_ones_error": front_end_error(inductor_copy(launch, folder, copies), ones_as_constants=True),
                "compile_s": round(time.perf_counter() - began, 2),
            })
    json.dump({"triton": triton.__version__, "kernels": results}, sys.stdout)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
