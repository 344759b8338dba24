"""The sm_90 model's loop-latency simulation (allpole_triton.bench.model): SASS operands read and
written, one warp's in-order issue of a loop body on synthetic SASS (no compile needed), and the
issue bound."""
from __future__ import annotations

import pytest

from allpole_triton.bench import model
from allpole_triton.bench.model import DRAM_LATENCY, LATENCY, _operands, loop_cycles


def _synthetic(name: str, text: list[str], ttgir: str = "", registers: int = 64):
    """A compiled kernel from SASS text (an instruction every 16 bytes) and TTGIR, its loops found
    as sm90.compile_launch finds them: no compile needed."""
    from allpole_triton.bench import sm90

    sass = [(16 * k, ins) for k, ins in enumerate(text)]
    return sm90.Compiled(name, registers, 0, sass, ttgir, "", spans=sm90.loop_spans(sass))


def _one_loop_ttgir(tile: str) -> str:
    """TTGIR of one loop that loads a ``tile`` (e.g. ``8x1x32``) of float32 a body."""
    return "\n".join(["tt.func public @k() {", "  scf.for %i = %a to %b step %c {",
                      f"    %u = tt.load %p : tensor<{tile}x!tt.ptr<f32>, #blocked>", "  }", "}"])


def test_operands_name_what_each_instruction_reads_and_writes():
    assert _operands("@!P2 LDG.E R218, desc[UR4][R166.64+0x38]") == ("LDG", ["R218"], ["P2", "UR4", "R166", "R167"])
    assert _operands("DFMA R4, R2, R6, R4") == ("DFMA", ["R4", "R5"], ["R2", "R3", "R6", "R7", "R4", "R5"])
    assert _operands("F2F.F64.F32 R4, R9") == ("F2F", ["R4", "R5"], ["R9"])
    assert _operands("F2F.F32.F64 R4, R8") == ("F2F", ["R4"], ["R8", "R9"])
    assert _operands("ISETP.GE.AND P2, PT, R8.reuse, R6, PT") == ("ISETP", ["P2"], ["R8", "R6"])
    assert _operands("IADD3 R18, P2, RZ, -R2, RZ") == ("IADD3", ["R18", "P2"], ["R2"])
    assert _operands("SHFL.BFLY PT, R5, R4, 0x1, 0x1f") == ("SHFL", ["R5"], ["R4"])
    assert _operands("STS.128 [R31+UR6], R4") == ("STS", [], ["R31", "UR6", "R4", "R5", "R6", "R7"])
    assert _operands("@!P0 STG.E desc[UR6][R6.64+0x4], R18") == ("STG", [], ["P0", "UR6", "R6", "R7", "R18"])
    assert _operands("CS2R R20, SRZ") == ("CS2R", ["R20", "R21"], [])
    assert _operands("BRA `(.L_x_3)") == ("BRA", [], [])


def test_a_dependent_chain_costs_its_latencies_and_independent_work_its_issue():
    chain = ["FFMA R1, R2, R3, R1"] * 4 + ["BRA 0x0"]
    assert loop_cycles(chain, DRAM_LATENCY) == 4 * 4  # each FMA waits for the one before
    independent = [f"FFMA R{10 + k}, R2, R3, R4" for k in range(6)] + ["BRA 0x0"]
    assert loop_cycles(independent, DRAM_LATENCY) == 7  # one issue per cycle
    wide = ["DFMA R4, R2, R6, R4", "BRA 0x0"]
    assert loop_cycles(wide, DRAM_LATENCY) == LATENCY["DFMA"]


def test_a_load_used_in_its_iteration_exposes_the_memory_latency_once_per_load_chain():
    # load -> use -> store, twice in a row (the next load issues after the store: its latency again)
    # (each iteration moves the addresses on: the loop's next samples)
    step = ["IADD3 R6, R6, 0x200, RZ", "IADD3 R16, R16, 0x200, RZ", "BRA 0x0"]
    serial = ["LDG.E R4, desc[UR4][R6.64]", "FFMA R5, R4, R3, R5", "STG.E desc[UR4][R8.64], R5",
              "LDG.E R4, desc[UR4][R16.64]", "FFMA R5, R4, R3, R5", "STG.E desc[UR4][R8.64+0x4], R5"] + step
    hoisted = [serial[0], serial[3].replace("R4,", "R10,"), serial[1], serial[2], "FFMA R5, R10, R3, R5", serial[5]] + step
    assert loop_cycles(serial, 800) > 2 * 800 > loop_cycles(hoisted, 800) > 800
    unused = ["LDG.E R4, desc[UR4][R6.64]", "FFMA R5, R2, R3, R5"] + step
    assert loop_cycles(unused, 800) < 10  # nothing waits for the load


def test_loads_of_one_line_wait_for_it_once():
    """A second load of the same 32-byte sector from the same base register waits for the sector the
    first one asked for (or an L1 hit), not for another memory latency; another sector, or the same
    offset after the base register changed, is a new memory access."""
    step = ["IADD3 R6, R6, 0x200, RZ", "BRA 0x0"]
    same_line = ["LDG.E R4, desc[UR4][R6.64]", "FFMA R5, R4, R3, R5", "LDG.E R10, desc[UR4][R6.64+0x1c]",
                 "FFMA R5, R10, R3, R5"] + step
    other_line = [same_line[0], same_line[1], "LDG.E R10, desc[UR4][R6.64+0x20]", same_line[3]] + step
    moved_base = [same_line[0], same_line[1], "IADD3 R6, R6, 0x4, RZ", same_line[2], same_line[3]] + step
    assert 800 < loop_cycles(same_line, 800) < 900 < 1600 < loop_cycles(other_line, 800)
    assert loop_cycles(moved_base, 800) > 1600
    assert _operands("IADD3 R18, P0, P1, R2, R3, RZ") == ("IADD3", ["R18", "P0", "P1"], ["R2", "R3"])
    assert _operands("IMAD.WIDE.U32.X R4, R9, 0x4, R6, P1")[2] == ["R9", "R6", "P1", "R6", "R7"]


def test_issue_is_spread_over_the_sms_the_programs_occupy():
    # one program (a row's carry) issues on one SM; many programs share all of them
    one = model.issue_seconds(4000, 0, 0, 0, programs=1)
    assert one == pytest.approx(1000 / model.CLOCK_HZ)
    assert model.issue_seconds(4000, 0, 0, 0, programs=2) == pytest.approx(one / 2)
    assert model.issue_seconds(4000, 0, 0, 0, programs=10 * model.SMS) == pytest.approx(one / model.SMS)
    # float64 issues at half rate
    assert model.issue_seconds(0, 4000, 0, 0, programs=1) == pytest.approx(2 * one)


def test_the_main_loop_is_the_last_and_an_earlier_loop_runs_once():
    """A fused carry's piece loop comes before the lane loop (and may be the longer of the two):
    the lane loop is the main loop, which the model counts per iteration; the piece loop runs once,
    with the rest."""
    from types import SimpleNamespace

    text = ["S2R R0, SR_TID.X", "DFMA R2, R4, R6, R2", "DFMA R2, R4, R6, R2", "DFMA R2, R4, R6, R2",
            "BRA 0x10", "LDG.E R8, desc[UR4][R10.64]", "FFMA R9, R8, R3, R9", "BRA 0x50", "EXIT"]
    compiled = _synthetic("k", text, registers=32)
    assert compiled.spans == [(1, 4), (5, 7)]
    assert compiled.main_loop == text[5:8]
    finish = SimpleNamespace(kernel=SimpleNamespace(__name__="_finish"), constexprs={})
    assert model.lane_loops(finish, compiled) == [(5, 7, 1.0)]


def test_the_padding_after_the_last_exit_is_not_issued():
    """cuobjdump lists a branch to itself and NOPs after a kernel's last EXIT (alignment, never
    reached): they are no instructions a thread runs. A NOP inside the code, and a loop's own
    branch, are."""
    text = ["S2R R0, SR_TID.X", "NOP", "FFMA R9, R8, R3, R9", "BRA 0x10", "EXIT", "BRA 0x50", "NOP", "NOP"]
    compiled = _synthetic("k", text, registers=32)
    assert compiled.reachable == text[:5]
    assert compiled.spans == [(1, 3)]
    # a kernel that ends in a loop's branch keeps it
    looping = _synthetic("k", text[:4], registers=32)
    assert looping.reachable == text[:4]


def test_a_fused_carry_reads_the_maps_before_each_block_as_whole_sectors():
    """16 rows of 2^16 samples at M=1 on 132 SMs: 64 blocks per row, the carry fused into the finish,
    whose block b reads b maps of 16 bytes, each a 32-byte sector of L2."""
    import torch

    from allpole_triton.kernels import triton_scan

    meta = torch.device("meta")
    u = torch.empty(16, 1 << 16, device=meta)
    launches, _ = triton_scan.plan(u, torch.empty(16, 1 << 16, 1, device=meta), torch.empty(16, 1, device=meta),
                                   torch.empty_like(u), reverse=False, sms=132)
    finish = launches[-1]
    assert [l.kernel.__name__ for l in launches] == ["_summary", "_finish"] and finish.constexprs["STATE"] == 4
    n_blocks = model._argument(finish, "n_blocks")
    assert n_blocks == 64
    assert model._fused_carry_bytes(finish) == 16 * 64 * 63 / 2 * 32
    assert model._fused_carry_bytes(launches[0]) == 0
    # L1: the piece loop's body (RUN loads of each of the map's 2 elements, a wavefront per lane)
    # fetched only for the b maps below block b, a wavefront per element each: 63 / 2 x 2 on average
    run, lanes = finish.constexprs["CARRY_RUN"], finish.constexprs["BLOCK"]
    assert model._fused_carry_wavefronts(finish, [run * 2 * lanes]) == pytest.approx(63 / 2 * 2)
    with pytest.raises(ValueError, match="piece loop"):
        model._fused_carry_wavefronts(finish, [])


def test_l1_wavefronts_count_lines_per_lane_tile_and_per_coalesced_row():
    """A per-lane tile costs a wavefront per element (a warp fetches 32 lanes' lines at once); a
    coalesced [lanes, S] tile the lines each lane's row spans; loads in the last top-level loop
    count per iteration, the rest once."""
    assert model.access_wavefronts([8, 1, 128], 4) == 8 * 128
    assert model.access_wavefronts([128, 8], 4) == pytest.approx(128 * (1 + 28 / 128))
    assert model.access_wavefronts([32, 64], 4) == pytest.approx(32 * (1 + 252 / 128))
    ttgir = "\n".join([
        "tt.func public @k(%p: !tt.ptr<f32>) {",
        "  %s = tt.load %p : !tt.ptr<f32>",
        "  %r = scf.for %i = %a to %b step %c iter_args(%h = %x) -> (tensor<128xf32, #blocked>) : i32 {",
        "    %v = scf.if %q -> (tensor<128xf32, #blocked>) {",
        "      %t = tt.load %ptrs, %mask : tensor<8x1x128x!tt.ptr<f32>, #blocked1>",
        "    } else {",
        "    }",
        "    %w = tt.load %rows : tensor<128x8x!tt.ptr<f64>, #blocked2>",
        "    tt.store %rows2, %w : tensor<128x8x!tt.ptr<f64>, #blocked2>",
        "    scf.yield %h : tensor<128xf32, #blocked>",
        "  } loc(#loc1)",
        "  tt.store %out, %r : tensor<128x!tt.ptr<f32>, #blocked>",
        "  tt.return",
        "}",
    ])
    in_loop, rest, earlier = model.global_wavefronts(ttgir, num_warps=4)
    row = 128 * (1 + 60 / 128)
    assert in_loop == pytest.approx(8 * 128 + 2 * row)
    assert rest == pytest.approx(4 + 128) and earlier == []
    # a loop before the main loop: its body once, apart
    piece = ttgir.replace("tt.func public @k(%p: !tt.ptr<f32>) {", "\n".join([
        "tt.func public @k(%p: !tt.ptr<f32>) {",
        "  %q = scf.for %j = %a to %b step %c iter_args(%g = %x) -> (tensor<32xf64, #blocked>) : i32 {",
        "    %m = tt.load %maps, %valid : tensor<32x!tt.ptr<f64>, #blocked>",
        "    scf.yield %m : tensor<32xf64, #blocked>",
        "  } loc(#loc2)",
    ]))
    assert model.global_wavefronts(piece, num_warps=4) == (in_loop, rest, [32])


def test_shared_wavefronts_count_the_bytes_a_warp_moves():
    body = ["STS [R1], R2", "STS.64 [R1], R2", "LDS.128 R4, [R1]", "STSM.16.M88.4 [R1], R4", "FFMA R1, R2, R3, R4",
            "LDL.64 R2, [R1+0x8]", "STL [R1], R2"]
    assert model.shared_wavefronts(body) == 1 + 2 + 4 + 4 + 2 + 1


def test_the_per_kernel_list_reports_spills_where_a_loop_has_them():
    """The model charges spills as L1 hits, which an H100 measured too cheap, so the per-kernel list
    names the most spilled accesses any variant of a kernel's loop makes (nothing where none do)."""
    from dataclasses import asdict

    def launch(name: str, spills: int) -> dict:
        return asdict(model.LaunchModel(name, 1, 128, 4, 16, 100, 10, 255 if spills else 64, 0, 0, 0, 0, 0, 0, 0, 0,
                                        0, 0, 0, 1e-6, spills))

    row = {"passes": "fwd", "B": 1, "T": 4096, "M": 16, "launches": 2, "thread_instructions_per_sample": 1.0,
           "bytes_per_sample": 12.0, "floor_bytes_per_sample": 12.0, "memory_floor_us": 1.0, "predicted_us": 2.0,
           "predicted_over_floor": 2.0, "kernels": [launch("_summary", 118), launch("_finish", 0)]}
    text = model.markdown([row])
    assert "- M=16 _summary: 100 instructions per iteration of 16 step(s), 255 registers, up to 118 spilled accesses" in text
    assert "- M=16 _finish: 100 instructions per iteration of 16 step(s), 64 registers\n" in text + "\n"
    # a later variant of the same kernel (the backward's) that spills more sets the count
    backward = dict(row, passes="fwdbwd", kernels=[launch("_summary", 2), launch("_finish", 4)])
    text = model.markdown([row, backward])
    assert "64 registers, up to 4 spilled accesses" in text and "up to 118 spilled" in text


def test_the_busiest_sm_runs_whole_programs():
    """147 equal programs on 132 SMs take two programs' time, not 147/132 of one (the H100's M=16
    finish at 16 x 2^20); up to 132 programs each SM runs at most one."""
    assert model.busiest_sm_share(147) == pytest.approx(2 / 147)
    assert model.busiest_sm_share(132) == pytest.approx(1 / 132)
    assert model.busiest_sm_share(10) == pytest.approx(1 / 10)
    assert model.busiest_sm_share(0) == 1.0


def test_the_queue_at_dram_stretches_only_the_chains_memory_waits():
    """model.queued_seconds: the time T at which a chain whose memory waits stretch by 1 / (1 - rho),
    rho = memory / T, ends; between the larger of the chain and the memory time and their sum."""
    import random

    rng = random.Random(5)
    for _ in range(200):
        memory, chain = rng.uniform(0, 100), rng.uniform(0.1, 100)
        wait = rng.uniform(0, chain)
        T = model.queued_seconds(memory, chain, wait)
        assert max(chain, memory) - 1e-9 <= T <= chain + memory + 1e-9
        if memory > 0 and wait > 0:
            assert T == pytest.approx((chain - wait) + wait / (1 - memory / T), rel=1e-9)
    assert model.queued_seconds(3.0, 2.0, 2.0) == pytest.approx(5.0)  # a chain all waiting: the sum
    assert model.queued_seconds(3.0, 2.0, 0.0) == pytest.approx(3.0)  # never waiting: the larger
    assert model.queued_seconds(0.0, 2.0, 1.5) == pytest.approx(2.0)  # DRAM idle: the chain
    assert model.queued_seconds(1.0, 2.0, 5.0) == model.queued_seconds(1.0, 2.0, 2.0)  # no more waiting than chain


def test_only_launches_that_stream_from_dram_queue_there():
    """model_launch takes the queued chain (loaded_s) for a launch that moves more than L2 holds, the
    plain chain otherwise; memory_wait_s is what doubling DRAM's latency adds to the chain.
    Synthetic SASS (a load and its use a body) on the M=2 forward summaries of 16 rows of 2^16 and
    of 2^20 samples."""
    import torch

    from allpole_triton.kernels import triton_scan

    text = ["S2R R0, SR_TID.X", "LDG.E R2, desc[UR4][R10.64]", "FFMA R3, R2, R5, R3", "STG.E desc[UR4][R12.64], R3",
            "BRA 0x10", "EXIT"]
    compiled = _synthetic("_summary", text, _one_loop_ttgir("8x1x32"))
    meta = torch.device("meta")
    for T, streams in ((1 << 16, False), (1 << 20, True)):
        u = torch.empty(16, T, device=meta)
        launches, _ = triton_scan.plan(u, torch.empty(16, T, 2, device=meta), torch.empty(16, 2, device=meta),
                                       torch.empty_like(u), reverse=False, sms=model.SMS)
        assert launches[0].kernel is triton_scan._summary
        modelled = model.model_launch(launches[0], compiled, torch.float32)
        assert (modelled.bytes > model.L2_BYTES) == streams
        assert 0 < modelled.memory_wait_s < modelled.latency_s
        if streams:
            assert modelled.loaded_s == pytest.approx(
                model.queued_seconds(modelled.bytes / model.BANDWIDTH, modelled.latency_s, modelled.memory_wait_s))
            assert modelled.loaded_s > max(modelled.latency_s, modelled.memory_s)
        else:
            assert modelled.loaded_s == modelled.latency_s
        bounds = (modelled.memory_s, modelled.issue_s, modelled.l1_s, modelled.loaded_s)
        assert modelled.predicted_s == pytest.approx(max(bounds) + model.LAUNCH_SECONDS)


def test_a_carry_reads_its_maps_from_l2_as_far_as_l2_keeps_them():
    """The M=16 carries of 16 and 256 rows of 2^16 samples (10 and 72 MB of maps): the first waits
    L2's latency a body, the second L2's for the share L2_RESIDENT_BYTES keeps and DRAM's for the
    rest. Synthetic SASS: a load and its use a body."""
    import torch

    from allpole_triton.kernels import triton_scan

    text = ["S2R R0, SR_TID.X", "LDG.E.64 R2, desc[UR4][R10.64]", "DFMA R4, R2, R6, R4", "STG.E.64 desc[UR4][R12.64], R4",
            "BRA 0x10", "EXIT"]
    compiled = _synthetic("_carry_long", text, "tt.func public @k() {\n}")
    meta = torch.device("meta")
    body = compiled.body(*compiled.spans[0])
    for B, resident in ((16, 1.0), (256, None)):
        u = torch.empty(B, 1 << 16, device=meta)
        launches, _ = triton_scan.plan(u, torch.empty(B, 1 << 16, 16, device=meta), torch.empty(B, 16, device=meta),
                                       torch.empty_like(u), reverse=False, sms=model.SMS)
        carry = next(l for l in launches if l.kernel is triton_scan._carry_long)
        modelled = model.model_launch(carry, compiled, torch.float32)
        if resident is None:
            assert modelled.bytes > 2 * model.L2_RESIDENT_BYTES
            resident = model.L2_RESIDENT_BYTES / modelled.bytes
        else:
            assert modelled.bytes < model.L2_RESIDENT_BYTES
        wait = resident * model.L2_LATENCY + (1 - resident) * model.DRAM_LATENCY
        chain = modelled.iterations * model.loop_cycles(body, wait) + wait
        assert modelled.latency_s == pytest.approx(chain / model.CLOCK_HZ)
        assert (modelled.memory_wait_s > 0) == (resident < 1)


def test_a_summary_refetches_coefficients_only_when_its_groups_run_apart(monkeypatch):
    """The long-order summary's recursion groups of one lane block run as consecutive programs
    (triton_scan.summary_blocks), so a round of resident programs shares each block's coefficients
    in L2: almost nothing is fetched twice. With the groups outermost (the order the fourth H100
    session ran), each of the nine groups at M=16 fetched them all again once they outgrew L2."""
    import torch

    from allpole_triton.kernels import triton_scan

    def summary(B, T):
        meta = torch.device("meta")
        u = torch.empty(B, T, device=meta)
        launches, _ = triton_scan.plan(u, torch.empty(B, T, 16, device=meta), torch.empty(B, 16, device=meta),
                                       torch.empty_like(u), reverse=False, sms=model.SMS)
        return next(l for l in launches if l.kernel is triton_scan._summary)

    launch = summary(256, 65536)
    coefficients = model._tensor_bytes(launch.args[1])
    assert launch.grid > 2 * model.SMS and coefficients > model.L2_BYTES
    assert model._refetched_bytes(launch, 2 * model.SMS) < 0.1 * coefficients
    assert model._refetched_bytes(summary(1, 4096), 2 * model.SMS) == 0  # all of it fits in L2
    monkeypatch.setattr(triton_scan, "summary_blocks", lambda groups, blocks: [p % blocks for p in range(groups * blocks)])
    assert model._refetched_bytes(launch, 2 * model.SMS) > 7 * coefficients


def test_a_long_summary_counts_each_program_through_its_own_loop():
    """A long-order summary's program runs either the driven recursion's loop (one program of a block's
    summary_groups) or the homogeneous one (the others), never both (triton_scan._summary). Each is
    weighed by its programs; what lies outside both counts once. Before 2026-11-28 the model ran
    every program through the last loop and counted the other once, as for a fused carry's piece loop."""
    import math

    import torch

    from allpole_triton.bench import sm90
    from allpole_triton.kernels import triton_scan

    meta = torch.device("meta")
    u = torch.empty(16, 4096, device=meta)
    launches, _ = triton_scan.plan(u, torch.empty(16, 4096, 16, device=meta), torch.empty(16, 16, device=meta),
                                   torch.empty_like(u), reverse=False, sms=model.SMS)
    launch = next(l for l in launches if l.kernel is triton_scan._summary)
    groups = triton_scan.summary_groups(16, launch.constexprs["R"])
    assert not launch.constexprs["SCAN"] and launch.grid % groups == 0
    # the driven loop: a load, a spill, its use; the homogeneous one: a chain of four FMAs, a spill
    text = (["S2R R0, SR_TID.X", "IMAD R1, R0, 0x4, RZ", "ISETP.GE.AND P0, PT, R0, 0x8, PT"]
            + ["LDG.E R2, desc[UR4][R10.64]", "STL [R1], R2", "FFMA R3, R2, R5, R3", "BRA 0x30"]  # driven
            + ["STG.E desc[UR4][R12.64], R3", "EXIT"]
            + ["FFMA R6, R7, R4, R6"] * 4 + ["STL [R1+0x4], R6", "BRA 0x90"]  # homogeneous
            + ["EXIT"])
    ttgir = "\n".join(["tt.func public @k() {", "  scf.for %i = %a to %b step %c {",
                       "    %u = tt.load %p : tensor<8x1x128x!tt.ptr<f32>, #blocked>", "  }",
                       "  scf.for %j = %a to %b step %c {",
                       "    %v = tt.load %q : tensor<2x1x128x!tt.ptr<f32>, #blocked>", "  }", "}"])
    compiled = _synthetic("_summary", text, ttgir)
    assert compiled.spans == [(3, 6), (9, 14)]
    assert model.lane_loops(launch, compiled) == [(3, 6, pytest.approx(1 / groups)), (9, 14, pytest.approx(1 - 1 / groups))]
    modelled = model.model_launch(launch, compiled, torch.float32)
    iterations = math.ceil(launch.steps / launch.constexprs["U"])
    per_thread = iterations * (4 / groups + 6 * (groups - 1) / groups) + 3 + 2 + 1
    assert modelled.thread_instructions == pytest.approx(launch.grid * 32 * launch.num_warps * per_thread)
    assert modelled.other_instructions == 6
    # a global load and a spill a driven iteration, in one program of each block's groups; a spill a
    # homogeneous iteration in the others; a store once
    warps = launch.grid * launch.num_warps
    shares = (1 / groups, (groups - 1) / groups)
    assert modelled.memory_warp_instructions == pytest.approx(warps * (iterations * (2 * shares[0] + shares[1]) + 1))
    # L1: each TTGIR loop's loads (a wavefront per element of a per-lane tile) weighed as the SASS
    # loops, and each loop's spill (a wavefront per warp)
    tiles = model.access_wavefronts([8, 1, 128], 4) * shares[0] + model.access_wavefronts([2, 1, 128], 4) * shares[1]
    assert modelled.l1_wavefronts == pytest.approx(launch.grid * iterations * tiles + warps * iterations)
    assert modelled.loop_spills == 1  # the worst loop's, not the two loops' sum
    # the latency chain is the slower branch's: the driven loop waits for its load
    driven_chain = model.loop_cycles(text[3:7], model.DRAM_LATENCY)
    assert driven_chain > model.loop_cycles(text[9:15], model.DRAM_LATENCY)
    waves = math.ceil(launch.grid * 32 * launch.num_warps / (model._resident_lanes(64, launch.num_warps) * model.SMS))
    chain = iterations * driven_chain + model.loop_cycles(text[:3], model.L2_LATENCY, iterations=1)
    assert modelled.latency_s == pytest.approx((waves * chain + model.DRAM_LATENCY) / model.CLOCK_HZ)
    single = _synthetic("_summary", text[:9], ttgir)
    with pytest.raises(ValueError, match="driven and the homogeneous"):
        model.lane_loops(launch, single)
    nested = sm90.Compiled("_summary", 64, 0, compiled.sass, ttgir, "", spans=[(3, 6), (2, 14)])
    with pytest.raises(ValueError, match="one after the other"):
        model.lane_loops(launch, nested)


def test_a_single_pass_runs_its_summary_and_lane_loops_every_iteration(monkeypatch):
    """A single-pass finish (triton_scan.single_pass) runs its block's summary loop, then waits for
    the earlier blocks and composes their maps once, then its lane loop: both loops count per
    iteration, one after the other on the latency chain (the lanes' loads L2 hits: the summary read
    the same inputs just before), and its second read of the inputs is L2 traffic. Synthetic SASS on
    the plan of 16 rows of 2^16 samples at M=2."""
    import math

    import torch

    from allpole_triton.kernels import triton_scan

    monkeypatch.setenv("ALLPOLE_TRITON_LAUNCH", "single=1")
    meta = torch.device("meta")
    u = torch.empty(16, 1 << 16, device=meta)
    a = torch.empty(16, 1 << 16, 2, device=meta)
    (launch,), _ = triton_scan.plan(u, a, torch.empty(16, 2, device=meta), torch.empty_like(u), reverse=False,
                                    sms=model.SMS)
    assert model.single_pass(launch) and launch.constexprs["CARRY_RUN"] > 0
    text = (["S2R R0, SR_TID.X", "IMAD R1, R0, 0x4, RZ"]
            + ["LDG.E R2, desc[UR4][R10.64]", "DFMA R4, R2, R6, R4", "BRA 0x20"]  # summary
            + ["ATOMG.E.ADD.STRONG.GPU PT, R7, desc[UR4][R12.64], RZ", "ISETP.NE.AND P0, PT, R7, RZ, PT", "BRA 0x50"]
            + ["LDG.E.64 R8, desc[UR4][R14.64]", "DFMA R4, R8, R4, R6", "BRA 0x80"]  # the fused carry's pieces
            + ["LDG.E R3, desc[UR4][R16.64]", "FFMA R5, R3, R5, R5", "STG.E desc[UR4][R18.64], R5", "BRA 0xb0"]  # lanes
            + ["EXIT"])
    ttgir = "\n".join(["tt.func public @k() {", "  scf.for %i = %a to %b step %c {",
                       "    %u = tt.load %p : tensor<8x1x32x!tt.ptr<f32>, #blocked>", "  }",
                       "  scf.while %w {", "  }",
                       "  scf.for %j = %a to %b step %c {",
                       "    %m = tt.load %q : tensor<32x!tt.ptr<f64>, #blocked>", "  }",
                       "  scf.for %k = %a to %b step %c {",
                       "    %v = tt.load %r : tensor<8x1x32x!tt.ptr<f32>, #blocked>", "  }", "}"])
    compiled = _synthetic("_finish", text, ttgir)
    assert compiled.spans == [(2, 4), (5, 7), (8, 10), (11, 14)]
    assert model.lane_loops(launch, compiled) == [(2, 4, 1.0), (11, 14, 1.0)]
    modelled = model.model_launch(launch, compiled, torch.float32)
    iterations = math.ceil(launch.steps / launch.constexprs["U"])
    assert modelled.thread_instructions == pytest.approx(launch.grid * 32 * launch.num_warps * (iterations * 7 + 9))
    assert modelled.l2_bytes == pytest.approx(model._fused_carry_bytes(launch) + (16 << 16) * 4 * 3)
    assert modelled.bytes == pytest.approx(model._launch_bytes(launch))
    # L1: both loops' tiles every iteration, the pieces' loads as a fused carry's
    tile = model.access_wavefronts([8, 1, 32], 4)
    assert modelled.l1_wavefronts == pytest.approx(
        launch.grid * (iterations * 2 * tile + model._fused_carry_wavefronts(launch, [model.access_wavefronts([32], 8)])))
    chain = (iterations * (model.loop_cycles(text[2:5], model.DRAM_LATENCY) + model.loop_cycles(text[11:15], model.L2_LATENCY))
             + model.loop_cycles(text[:2] + text[5:11], model.L2_LATENCY, iterations=1))
    waves = math.ceil(launch.grid * 32 * launch.num_warps / (model._resident_lanes(64, launch.num_warps) * model.SMS))
    assert modelled.latency_s == pytest.approx((waves * chain + model.DRAM_LATENCY) / model.CLOCK_HZ)
    # the fill that zeroes its ticket and bits first (Launch.run) costs a launch gap too
    bounds = (modelled.memory_s, modelled.issue_s, modelled.l1_s, modelled.latency_s)
    assert modelled.predicted_s == pytest.approx(max(bounds) + 2 * model.LAUNCH_SECONDS) and modelled.fills == 1
    storing = ["STG.E desc[UR4][R18.64], R4" if k == 3 else ins for k, ins in enumerate(text)]
    with pytest.raises(ValueError, match="summary loop"):  # a loop that stores first: not a summary
        model.lane_loops(launch, _synthetic("_finish", storing, ttgir))


def test_the_backward_copies_are_modelled_as_loop_free_kernels():
    """The backward's copies (_reversed_inputs, _adjoint_outputs at M=16) have no lane loop: every
    instruction counts once per thread, and their L1 wavefronts come from the copy's shape."""
    import torch

    launches = model.pass_launches(16, 65536, 16, True)
    copies = [l for l in launches if l.kernel.__name__ in ("_reversed_inputs", "_adjoint_outputs")]
    assert copies
    text = ["S2R R0, SR_TID.X", "LDG.E R2, desc[UR4][R10.64]", "STG.E desc[UR4][R12.64], R2", "EXIT"]
    compiled = _synthetic("copy", text, registers=16)
    for launch in copies:
        modelled = model.model_launch(launch, compiled, torch.float32)
        assert modelled.thread_instructions == launch.grid * 32 * launch.num_warps * len(text)
        assert modelled.other_instructions == len(text) and modelled.loop_instructions == 0
        assert modelled.l1_wavefronts == pytest.approx(model.copy_wavefronts(launch))


def test_the_dense_summary_counts_the_chunks_a_warp_holds_not_its_lanes():
    """The dense scan's summary runs a chunk's M+1 recursions on consecutive lanes, which load the
    same A[n]: a warp's access touches the lines of the chunks among its 32 lanes, counted exactly
    here by enumerating every lane offset. The finish (one chunk a lane) keeps 32."""
    import torch

    from allpole_triton.kernels import triton_recurrence

    meta = torch.device("meta")
    for M in (2, 16):
        u = torch.empty(1, 1 << 16, M, device=meta)
        summary, _, finish = triton_recurrence.plan(torch.empty(1, 1 << 16, M, M, device=meta), u,
                                                    torch.empty(1, M, device=meta), torch.empty_like(u), sms=model.SMS)
        assert summary.constexprs["SUMMARY"] and not finish.constexprs["SUMMARY"]
        columns = M + 1
        chunks = [len({(first + lane) // columns for lane in range(32)}) for first in range(columns)]
        assert model.shared_lane_lines(summary) == pytest.approx(sum(chunks) / len(chunks) / 32)
        assert model.shared_lane_lines(finish) == 1.0
        # model_launch charges the summary's loop accesses at that share (synthetic SASS and TTGIR:
        # one per-lane load a body, nothing else touching L1)
        text = ["S2R R0, SR_TID.X", "LDG.E R2, desc[UR4][R10.64]", "FFMA R3, R2, R5, R3", "BRA 0x10", "EXIT"]
        compiled = _synthetic("_dense_scan", text, _one_loop_ttgir("1x1x128"))
        modelled = model.model_launch(summary, compiled, torch.float32)
        iterations = -(-summary.steps // summary.constexprs["U"])
        assert modelled.l1_wavefronts == pytest.approx(summary.grid * iterations * 128 * model.shared_lane_lines(summary))
