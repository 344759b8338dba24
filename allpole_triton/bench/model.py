"""``allpole-bench --model``: a static H100 performance model of the Triton passes, built without a GPU.

Each pass is planned exactly as it would launch (``triton_scan.plan`` on the meta device, 132 SMs),
every launch is compiled for sm_90 (``sm90.compile_launch``) and its SASS read:

- the main loop's instructions per iteration (one iteration = one unrolled body of U steps for the
  lane kernels, one chunk or one block of carries for the carry kernels; a long-order summary's
  programs run one of two loops, weighed by the programs that run each: :func:`lane_loops`) and
  the instructions outside it, giving thread-instructions per sample for the pass;
- bytes moved through device memory, counted from the algorithm (inputs read by the summary and
  again by the finish, float64 chunk maps written and read back, outputs written once; a long-order
  summary's coefficients again for each round of resident programs its recursion groups span once
  they outgrow L2, :func:`_refetched_bytes`);
- four bounds per launch: memory (bytes / 3.0 TB/s); issue (the warp instructions of the busiest
  of 132 SMs, which runs ceil(programs / 132) programs (:func:`busiest_sm_share`), over 4
  schedulers x 1.755 GHz, with float64 arithmetic at half rate, float64 conversions at 16 per
  clock per SM and memory instructions at one warp per clock per SM); L1 throughput (the busiest
  SM's wavefronts, one per clock, a wavefront per 128-byte line a warp's access touches:
  :func:`global_wavefronts` from the TTGIR's loads and stores, :func:`shared_wavefronts` from the
  SASS); and the loop-carried
  latency chain: the compiled loop body issued in order by one warp, each instruction once the
  registers it reads are ready (:func:`loop_cycles`, with per-opcode latencies and a memory latency
  per 32-byte sector), times the iterations, after the code before the loop (its loads of incoming
  states and maps, and a fused carry's composition of the maps before a block), in as many waves as
  the SMs' registers allow. So a load the compiler left behind a store (it cannot move a load above
  a store that may alias it) costs its full latency on the chain. Where a launch streams more than
  L2 holds from DRAM, the chain's memory waits stretch with the queue its own traffic makes there
  (:func:`queued_seconds`), so memory and latency add up where both matter. The launch's predicted
  time is the largest bound, plus a fixed launch cost.

Replayed on the kernels of the first GPU run (H200, commit 4550815, B=16, T=2^20, fp32), the
latency term took the model from 4.6-37x below the measured times to 3.6-5.0x below; the earlier
term (a memory latency per body plus a log-depth reduction per step) missed that the compiled lane
loops waited for each step's loads. On the first H100 run (commit 12fda57, same shapes) the model
without the L1 term was 3.6-11x below the measured times; the L1 term, with nothing fitted, puts
them at 1.03x (forward, M=16), 1.12x (forward, M=2), 1.27x and 1.44x (forward+backward, M=2 and 16)
of its predictions: lanes reading their own chunks one element per instruction made every pass
L1-bound, the M=16 summary (each coefficient fetched by 9 lanes) above all.

Spills are charged like any L1 access (wavefronts, and an L1 latency on the chain). That is too
cheap: the fourth H100 session (2026-11-27) measured a forward M=16 summary whose loop spilled 118
accesses a body, against 70 before, 12% slower than the second session had (the whole forward 8%
slower, side by side with the older commit), where the model had called the change 1-3% faster. A term for spills that overflow L1 into L2 (the resident threads'
stacks beside their shared memory) was tried and still called it faster; the per-kernel list
reports each loop's spills instead, for a reader to weigh.

Two terms came from the fourth session's launch times (``launch_times --predict`` on 605d22f's
launches): the busiest SM's whole programs (the M=16 finish's measured/predicted went from
1.29-1.65 to 0.87-0.92) and a summary's refetched coefficients (its measured/predicted from
3.4-3.8 to 1.9 at 256 x 65536 and 3.1 at 16 x 2^20). The summary's remaining gap is its own: 1.45-1.9x
with one row, where neither term applies.

The memory latencies were then fitted to the same replays (2026-11-28, see DRAM_LATENCY): the
latency-bound launches had run 1.0-1.8x their predictions with unloaded latencies. The memory-bound
M=2 launches moved 1.7-1.9 TB/s against the 3.0 TB/s the memory bound assumes, and the launches
that stream from DRAM ran 1.45-2.14x the largest bound on the fifth H100 session where their
memory and latency bounds were close: the queue at DRAM (:func:`queued_seconds`, 2026-11-28) puts
those at 0.88-1.43x, and the carries whose maps outgrow what L2 keeps of them read the rest at
DRAM's latency (L2_RESIDENT_BYTES, 2026-11-29: the M=16 carries at 37 and 72 MB of maps from
1.42-2.14x to 0.83-1.00x). Still off: the one-row M=16 summary at 65536 (0.65x), the backward's copies
of short rows (1.3-2.3x, a few microseconds), and the dense scan's carry (0.30-0.61x: a lane
kernel here, its loads wait DRAM's latency, though its maps likely come from L2) and its finish at
M=16 (1.8x); its summaries, 0.09-0.36x while every lane was counted a line of its own, are at
0.79-0.91x (shared_lane_lines, 2026-11-29).

Its times are GPU times: an eager call's host cost (Python, the plan, Triton's launch path) is
not modelled, and the H100 measured it above the GPU time of M <= 4 passes up to 2^24 samples
(``allpole_triton.bench.host_times``); CUDA graphs (``torch.compile(mode="reduce-overhead")``) remove it.

It is a model: no number here was measured. ``bench/gpu_session.sh`` times the same cases on a
GPU and joins them to these predictions (``--measured``), which is how the constants below get
calibrated.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import torch

# H100 SXM datasheet figures, latency guesses and two fitted memory latencies (the rest to be calibrated
# by bench/gpu_session.sh's times)
SMS = 132
SCHEDULERS = 4
CLOCK_HZ = 1.755e9
BANDWIDTH = 3.0e12  # bytes/s
L2_BANDWIDTH = 2 * BANDWIDTH  # bytes/s of L2 hits: a guess, to be calibrated like the rest
REGISTERS_PER_SM = 65536
THREADS_PER_SM = 2048
# Memory latencies under load, fitted (2026-11-28) to the per-launch times of two H100 sessions,
# replayed with this model on the code each ran (8cbb61a at M=2, 605d22f at M=16). At 800 and 300
# cycles (unloaded figures) the latency-bound launches ran 1.04-1.80x their predictions at M=2
# (summaries) and 1.43-1.78x at M=16 (one-row summaries), the carries 1.28-1.31x; at 1200 and 450
# 0.74-1.29x (1.55 at 256 x 2^20, memory-bound), 1.10-1.37x and 0.89-0.92x; at 1600 and 600 the
# short launches fell to 0.58x (docs/gpu-notes.md has the table).
DRAM_LATENCY = 1200  # cycles: a lane kernel's loads (its inputs stream from DRAM)
L2_LATENCY = 450  # cycles: a carry's loads of the maps the summary just wrote (as far as L2 keeps them)
L2_BYTES = 50 * 2**20
# A carry reads the maps its summary wrote while streaming the pass's inputs: the share of them
# still in L2 is this over the bytes the carry moves (its maps and, a seventeenth as much at M=16,
# the states it writes; at most all), the rest comes at DRAM_LATENCY. Fitted
# on the fifth H100 session's eight carry launches (M=16, code eb9f212, whose carries plan as
# today's; launch_times.csv): with every map from L2 they ran 0.88-0.92x their predictions up to
# 10 MB of maps, but 1.42-1.47x at 37 MB and 2.14x at 72 MB; with this share 0.88-0.92x,
# 0.96-1.00x and 0.83-0.84x (1.08x before DRAM's queue, which the 72 MB ones join, see
# queued_seconds). Half of L2: the summaries' own traffic (1.1 GB at both) shares it.
L2_RESIDENT_BYTES = 25 * 2**20
# Result latencies in cycles by SASS opcode (sm_90, from published microbenchmarks of Volta to
# Hopper; to be calibrated); every other instruction 4. Loads: the launch's memory latency.
LATENCY = {"DFMA": 8, "DADD": 8, "DMUL": 8, "DMNMX": 8, "DSETP": 8, "F2F": 14, "F2I": 14, "I2F": 14, "I2FP": 14,
           "F2FP": 14, "MUFU": 14, "FRND": 14, "LDS": 30, "LDSM": 30, "SHFL": 30, "LDL": 40, "S2R": 20, "S2UR": 20,
           "LDC": 20, "ULDC": 20}
GLOBAL_LOADS = ("LDG", "LD", "ATOM", "ATOMG", "LDGSTS")  # (an atomic returns its value from L2, like a load)
# L1TEX passes one wavefront per clock per SM, and a wavefront holds the data of one 128-byte line
# (NVIDIA's L1TEX model: wavefronts are the cycles a request takes; the lines one may hold are
# bounded). A lane kernel's lanes are chunks at least 128 bytes apart, so a warp-wide access of a
# per-lane tile touches 32 lines: 32 cycles of L1 for 128 useful bytes.
L1_LINE_BYTES = 128
# Shared-memory instructions (a coalesced tile's transposes) and local-memory ones (spills, which a
# thread's neighbours interleave): one wavefront per 128 bytes a warp moves.
SHARED_OPS = {"LDS": 32, "STS": 32, "LDSM": 128, "STSM": 128, "LDL": 32, "STL": 32}  # bits per thread, plain form
# the GPU's gap between dependent launches issued back to back (a CUDA graph, or a host that keeps
# ahead). Not the host's cost: the third H100 session measured 34-56 us of host time per Triton
# launch from Python and 270 us (forward) to 1.75 ms (forward+backward) per eager call, so an
# eager pass at M <= 4 was host-bound up to 2^24 samples (bench/results/NVIDIA-H100-80GB-HBM3/host_times.csv)
LAUNCH_SECONDS = 2.5e-6
FP64_OPS = ("DFMA", "DMUL", "DADD", "DSETP", "DMNMX")
CONVERSIONS = ("F2F",)
MEMORY_OPS = ("LDG", "STG", "LDS", "STS", "SHFL", "LDL", "STL", "ATOM", "ATOMG", "RED", "LDGSTS")

GRID = dict(B=[1, 16, 256], T=[4096, 65536, 1 << 20], M=[1, 2, 4, 16])


@dataclass
class LaunchModel:
    kernel: str
    grid: int
    lanes: int
    iterations: int  # of the main loop, per lane (or per program for the carries)
    unroll: int
    loop_instructions: int  # per iteration, on average over the programs (see lane_loops)
    other_instructions: int
    registers: int
    thread_instructions: float
    fp64_warp_instructions: float
    conversion_warp_instructions: float
    memory_warp_instructions: float
    bytes: float
    l2_bytes: float  # reads served by L2 by design (a fused carry's maps), charged at L2_BANDWIDTH
    memory_s: float
    issue_s: float
    l1_wavefronts: float
    l1_s: float
    latency_s: float
    predicted_s: float
    loop_spills: int = 0  # local-memory accesses (LDL, STL) per iteration of the worst loop: reported, charged as L1
    fills: int = 0  # kernels torch launches before it (a single pass's zeroed ticket and bits), counted as launches
    memory_wait_s: float = 0.0  # of latency_s, the waits for DRAM (see queued_seconds)
    loaded_s: float = 0.0  # latency_s with those waits stretched by DRAM's queue (queued_seconds)


@dataclass
class CaseModel:
    B: int
    T: int
    M: int
    passes: str
    launches: list[LaunchModel] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return self.B * self.T

    def totals(self) -> dict:
        thread = sum(l.thread_instructions for l in self.launches)
        moved = sum(l.bytes for l in self.launches)
        predicted = sum(l.predicted_s for l in self.launches)
        floor = floor_bytes(self.B, self.T, self.M, self.passes) / BANDWIDTH
        return {
            "B": self.B, "T": self.T, "M": self.M, "passes": self.passes, "launches": sum(1 + l.fills for l in self.launches),
            "thread_instructions_per_sample": thread / self.samples,
            "bytes_per_sample": moved / self.samples,
            "l2_bytes_per_sample": sum(l.l2_bytes for l in self.launches) / self.samples,
            "floor_bytes_per_sample": floor_bytes(self.B, self.T, self.M, self.passes) / self.samples,
            "memory_floor_us": floor * 1e6,
            "predicted_us": predicted * 1e6,
            "predicted_over_floor": predicted / floor,
            "kernels": [asdict(l) for l in self.launches],
        }


def floor_bytes(B: int, T: int, M: int, passes: str, itemsize: int = 4) -> int:
    """Each input read once, each output written once (float32, time-varying coefficients).
    ``dense``: linear_recurrence's forward, A (B, T, M, M) and u in, h out."""
    forward = B * T * (2 + M) * itemsize  # x, a in; y out
    backward = B * T * (3 + M + M) * itemsize  # grad_y, a, y in; grad_x, grad_a out
    dense = B * T * (M * M + 2 * M) * itemsize
    return {"fwd": forward, "fwdbwd": forward + backward, "dense": dense}[passes]


def _opcode(instruction: str) -> str:
    words = instruction.split()
    word = words[1] if words[0].startswith("@") else words[0]
    return word.split(".")[0]


_REGISTER = re.compile(r"(?<![\w.])(U?R\d+|U?P\d+)(?:\.(64|128))?")
_PREDICATE = re.compile(r"^!?U?P(\d+|T)$")  # an operand that is a predicate register (or PT)
# opcodes that write no register, and those whose first two operands are predicates they write
_NO_DESTINATION = ("ST", "STG", "STS", "STL", "STSM", "LDGSTS", "RED", "BRA", "BAR", "EXIT", "NOP", "MEMBAR",
                   "DEPBAR", "WARPSYNC", "BSSY", "BSYNC", "YIELD", "CALL", "RET", "ERRBAR", "CCTL", "FENCE")
_SETP = ("ISETP", "FSETP", "DSETP", "UISETP", "PLOP3", "UPLOP3", "HSETP2", "VOTEU")


def _registers(operand: str, width: int) -> list[str]:
    """The registers an operand names: ``R4`` of a 64-bit value is R4 and R5; an address ``R2.64``
    is R2 and R3. RZ, PT and immediates name none."""
    names = []
    for m in _REGISTER.finditer(operand):
        base, suffix = m.group(1), m.group(2)
        count = {"64": 2, "128": 4}.get(suffix, width if not base.lstrip("U").startswith("P") else 1)
        prefix = "".join(c for c in base if not c.isdigit())
        number = int(base[len(prefix):])
        names += [f"{prefix}{number + k}" for k in range(count)]
    return names


def _operands(instruction: str) -> tuple[str, list[str], list[str]]:
    """(opcode, registers written, registers read) of one SASS instruction."""
    guard = []
    if instruction.startswith("@"):
        condition, instruction = instruction.split(None, 1)
        guard = _registers(condition, 1)
    word, _, rest = instruction.partition(" ")
    parts = word.split(".")
    op, modifiers = parts[0], parts[1:]
    operands = [o.strip() for o in rest.split(",")] if rest.strip() else []
    wide = op.startswith("D") and op in FP64_OPS + ("DSETP",)
    vector = 4 if "128" in modifiers else 2 if "64" in modifiers else 1
    data = 2 if wide else vector if op[:2] in ("LD", "ST") or op in ("ULDC", "LDC") else 1
    wide_multiply = op in ("IMAD", "UIMAD") and "WIDE" in modifiers
    dest_width = 2 if wide or (op == "CS2R" and "32" not in modifiers) or wide_multiply else data
    source_width = 2 if wide else data
    if op == "F2F" and len(modifiers) >= 2:  # F2F.F64.F32: destination type, then source type
        dest_width, source_width = (2 if "64" in modifiers[0] else 1), (2 if "64" in modifiers[1] else 1)
    if op in _NO_DESTINATION or not operands:
        dests, sources = [], operands
    elif op == "FCHK":  # FCHK P0, R0, R3: a predicate from two registers
        dests, sources = operands[:1], operands[1:]
    elif op in _SETP or _PREDICATE.match(operands[0]):  # SETPs write two predicates; SHFL a predicate first
        dests, sources = operands[:2], operands[2:]
    else:  # a register, then any carry-out predicates: IADD3 R4, P0, P1, ...; LEA R6, P1, ...
        count = 1
        while count < len(operands) - 1 and count <= 2 and _PREDICATE.match(operands[count]):
            count += 1
        dests, sources = operands[:count], operands[count:]
    written = [r for o in dests for r in _registers(o, dest_width) if r not in ("PT", "UPT")]
    read = guard + [r for o in sources for r in _registers(o, 1 if "[" in o else source_width)]
    if wide_multiply and len(sources) > 2:  # IMAD.WIDE Rd, Ra, Rb, Rc: the addend Rc is 64-bit
        read += _registers(sources[2], 2)
    return op, written, read


_ADDRESS = re.compile(r"\[(U?R\d+)(?:\.64)?(?:\+(-?)(0x[0-9a-f]+|\d+))?\]$")
LINE_BYTES = 32  # a sector: the unit L1 requests from L2 and DRAM
L1_LATENCY = 35


def loop_cycles(body: list[str], load_latency: float, iterations: int = 4) -> float:
    """Cycles per iteration of one warp running ``body`` in a loop on its own, in steady state: each
    instruction issues in program order, one per cycle, once the registers it reads are ready (a
    GPU scheduler issues a warp's instructions in order and stalls it on an operand not yet
    written); its results are ready ``LATENCY`` cycles later. A global load waits ``load_latency``
    for its sector, and a later load of the same 32-byte sector from the same base register (until
    that register is written again) waits for that sector, or ``L1_LATENCY`` once it is there.
    Consecutive iterations overlap only as in-order issue allows (a load issued for a later
    iteration, as software pipelining does, hides its latency)."""
    parsed = [(_operands(i), _line_of(i)) for i in body]
    ready: dict[str, float] = {}
    version: dict[str, int] = {}
    lines: dict[tuple, float] = {}
    clock, ends = 0.0, []
    for _ in range(iterations):
        for (op, written, read), line in parsed:
            clock = max([clock + 1] + [ready.get(r, 0.0) for r in read])
            latency = LATENCY.get(op, 4)
            if op in GLOBAL_LOADS:
                key = None if line is None else (line[0], version.get(line[0], 0), line[1])
                arrival = lines.setdefault(key, clock + load_latency) if key else clock + load_latency
                latency = max(arrival - clock, L1_LATENCY)
            for r in written:
                ready[r] = clock + latency
                version[r] = version.get(r, 0) + 1
        ends.append(clock)
    return ends[-1] - ends[-2] if len(ends) > 1 else ends[-1]


def _line_of(instruction: str) -> tuple[str, int] | None:
    """(base register, 32-byte sector of the immediate offset) of a global load's address."""
    if _opcode(instruction) not in GLOBAL_LOADS:
        return None
    m = _ADDRESS.search(instruction.split(",")[-1].strip())
    if not m:
        return None
    offset = int(m.group(3), 0) if m.group(3) else 0
    return m.group(1), (-offset if m.group(2) else offset) // LINE_BYTES


def _count(body: list[str], names: tuple[str, ...]) -> int:
    return sum(_opcode(i) in names for i in body)


def _tensor_bytes(t) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


def _launch_bytes(launch) -> float:
    """Device-memory traffic of one launch, from what the kernel reads and writes (its own
    arguments: the backward's forward scan on reversed time runs on tensors of its own)."""
    name = launch.kernel.__name__
    args = launch.args
    if name == "_dense_scan":  # A (or the maps), u (or the maps' z column), incoming states, outputs
        A, u, h0, carry, out = args[:5]
        reads = [A] + ([u] if u is not A else []) + ([carry] if carry is not h0 else [])
        return sum(map(_tensor_bytes, reads)) + _tensor_bytes(out)
    if name == "_reversed_inputs":  # a in, its reversed-time rows out; with INPUT grad_y's too
        g, a, g_out, b = args[:4]
        inputs = (g, g_out) if launch.constexprs["INPUT"] else ()
        return sum(map(_tensor_bytes, (a, b, *inputs)))
    if name == "_adjoint_outputs":  # lam in; grad_x, grad_zi and grad_a out (y with grad_a)
        lam, y, _, grad_x, grad_zi, grad_a = args[:6]
        with_a = launch.constexprs["GRAD_A"]
        return sum(map(_tensor_bytes, (lam, grad_x, grad_zi))) + (_tensor_bytes(y) + _tensor_bytes(grad_a) if with_a else 0)
    u, a = args[0], args[1]
    if name == "_summary":
        return _tensor_bytes(u) + _tensor_bytes(a) + _tensor_bytes(args[2])
    if name == "_carry_short":  # each block's map (twice with runs: a run's total, then its walk), the states out
        prefix, _, block_in = args[:3]
        group = args[5]
        reads = 2 if launch.constexprs["RUN"] > 1 else 1
        return reads * _tensor_bytes(prefix) / max(1, group) + _tensor_bytes(block_in)
    if name == "_carry_long":
        maps, _, carry = args[:3]
        return _tensor_bytes(maps) + _tensor_bytes(carry)
    # _finish: inputs again, the incoming states, the outputs
    carry, prefix, out = args[3], args[4], args[5]
    state = launch.constexprs["STATE"]
    total = _tensor_bytes(u) + _tensor_bytes(a) + _tensor_bytes(out)
    total += {2: _tensor_bytes(carry), 3: _tensor_bytes(carry) + _tensor_bytes(prefix),
              4: _tensor_bytes(prefix)}.get(state, 0)
    if launch.constexprs["REVERSE"]:
        total += _tensor_bytes(args[6]) if args[6] is not u else 0  # grad_zi (u stands in for none)
        if launch.constexprs["GRAD_A"]:
            total += _tensor_bytes(args[7]) + _tensor_bytes(args[8])  # y, grad_a
    return total


def _refetched_bytes(launch, resident_programs: int) -> float:
    """Coefficients a long-order summary reads from DRAM more than once. Each of a lane block's
    recursion groups (programs, see triton_scan.summary_blocks) reads the block's coefficients;
    programs start in order, ``resident_programs`` at a time, and a block's programs that run in
    the same round share its coefficients in L2. Those of a later round find them evicted, unless
    all coefficients fit in L2."""
    if launch.kernel.__name__ != "_summary" or launch.constexprs["SCAN"]:
        return 0.0
    from allpole_triton.kernels import triton_scan

    coefficients = _tensor_bytes(launch.args[1])
    if coefficients <= L2_BYTES:
        return 0.0
    groups = triton_scan.summary_groups(launch.constexprs["M"], launch.constexprs["R"])
    blocks = launch.grid // groups
    rounds: dict[int, set[int]] = {}
    for program, block in enumerate(triton_scan.summary_blocks(groups, blocks)):
        rounds.setdefault(block, set()).add(program // resident_programs)
    return coefficients * (sum(map(len, rounds.values())) / blocks - 1)


def _argument(launch, name: str):
    """A launch's runtime argument by its name in the kernel's signature (runtime arguments come
    first there, constexprs after)."""
    return launch.args[launch.kernel.arg_names.index(name)]


def _fused_carry_bytes(launch) -> float:
    """What a finish with the carry fused in (STATE 4) reads before its lanes start: block b's
    program reads the b maps before it, n_blocks (n_blocks - 1) / 2 per row, each a whole number
    of 32-byte sectors (one map per sector at M=1: the maps sit a block's chunks apart). L2 hits:
    every program of a row reads the same maps, which the summary has just written."""
    if launch.kernel.__name__ != "_finish" or launch.constexprs["STATE"] != 4:
        return 0.0
    prefix, n_chunks, n_blocks = (_argument(launch, name) for name in ("prefix_ptr", "n_chunks", "n_blocks"))
    rows = launch.grid // n_blocks
    map_bytes = _tensor_bytes(prefix) / (rows * n_chunks)
    return rows * n_blocks * (n_blocks - 1) / 2 * math.ceil(map_bytes / LINE_BYTES) * LINE_BYTES


def _single_pass_bytes(launch) -> float:
    """What a single-pass finish reads from L2 by design: its lanes read their inputs (and
    coefficients) again, which its summary loop read just before (a program's block is 12 KB at
    M=2; the programs resident at once, a few tens of MB, fit the 50 MB L2). Its DRAM traffic is
    what _launch_bytes counts for any finish, the summary launch's reads gone."""
    if not single_pass(launch):
        return 0.0
    return _tensor_bytes(launch.args[0]) + _tensor_bytes(launch.args[1])


_ACCESS = re.compile(r"\b(tt\.load|tt\.store)\b.*?:\s*tensor<([0-9x]+)x!tt\.ptr<([a-z0-9]+)>")
_SCALAR_ACCESS = re.compile(r"\b(tt\.load|tt\.store)\b.*?:\s*!tt\.ptr<")
_ITEM_BYTES = {"f64": 8, "i64": 8, "f32": 4, "i32": 4, "f16": 2, "bf16": 2}


def access_wavefronts(shape: list[int], item_bytes: int) -> float:
    """L1 wavefronts one program's global access of a lane-kernel tile costs. Rank 2 is a coalesced
    tile (``triton_tiles.load_rows``): a row per lane, contiguous along its last axis, so each row
    costs the lines it spans (a row of b bytes at a 4-byte-aligned start spans 1 + (b - 4) / 128 on
    average). Any other rank is a per-lane tile whose every element a warp fetches from 32 lanes'
    lines at once: one wavefront per element."""
    if len(shape) == 2:
        return shape[0] * (1 + (shape[1] * item_bytes - min(4, item_bytes)) / L1_LINE_BYTES)
    return float(math.prod(shape))


def _warp_lines(addresses) -> int:
    """Distinct 128-byte lines among the byte addresses one warp access touches."""
    return len({address // L1_LINE_BYTES for address in addresses})


def copy_wavefronts(launch) -> float:
    """L1 wavefronts of the backward's two copy kernels (triton_adjoint), whose accesses
    global_wavefronts' lane-tile rule does not describe. As compiled (TTGIR ``threadsPerWarp
    [32, 1]``) a warp holds 32 consecutive steps, a thread one step's M taps: an access of each tap
    costs the lines its 32 addresses touch (enumerated for one warp, 4-byte elements), and a
    thread's contiguous row of taps goes in 16-byte pieces. The diagonal a[T-1-k+i, i-1] puts the
    32 steps of a tap M elements apart (M lines up to M = 32). Only the first ``a_rows`` rows copy
    coefficients (shared ones are written once)."""
    M = launch.constexprs["M"]
    warps = launch.grid * launch.constexprs["BLOCK"] / 32  # warp accesses of a [BLOCK] tile
    steps = range(32)
    single = _warp_lines(4 * k for k in steps)  # g, lam, grad_x: one value a step
    pieces = range(0, 4 * M, 16)
    row_of_taps = sum(_warp_lines(4 * k * M + piece + byte for k in steps for byte in range(min(16, 4 * M - piece)))
                      for piece in pieces)  # b out, grad_a out
    if launch.kernel.__name__ == "_reversed_inputs":
        rows, a_rows = launch.grid // launch.args[6], launch.args[7]
        diagonal = sum(_warp_lines(4 * ((100 - k + j) * M + j) for k in steps) for j in range(M))
        inputs = 2 * single if launch.constexprs["INPUT"] else 0
        return warps * (inputs + a_rows / rows * (diagonal + row_of_taps))
    total = warps * 2 * single  # lam in, grad_x out
    if launch.constexprs["GRAD_A"]:  # y[n-i] in, tap by tap; grad_a out
        total += warps * (sum(_warp_lines(4 * (100 + k - i) for k in steps) for i in range(1, M + 1)) + row_of_taps)
    return total


def global_wavefronts(ttgir: str, num_warps: int) -> tuple[float, float, list[float]]:
    """L1 wavefronts per program of the global loads and stores: (inside the main loop, per
    iteration; outside every loop; each earlier top-level loop's body, once). The main loop is the
    last scf.for not nested in another one (as for the SASS, see sm90.Compiled.main_loop); a scalar
    access costs one per warp."""
    loops: list[list[float]] = []  # top-level loops' wavefronts, in program order
    outside = 0.0
    stack: list[bool] = []  # open regions: True for an scf.for
    for line in ttgir.splitlines():
        text = line.strip()
        if text.startswith("}"):
            stack.pop()
        m = _ACCESS.search(text)
        cost = None
        if m:
            cost = access_wavefronts([int(d) for d in m.group(2).split("x")], _ITEM_BYTES.get(m.group(3), 4))
        elif _SCALAR_ACCESS.search(text):
            cost = float(num_warps)
        if cost is not None:
            if any(stack):
                loops[-1][0] += cost
            else:
                outside += cost
        if text.endswith("{"):
            is_for = "scf.for" in text
            if is_for and not any(stack):
                loops.append([0.0])
            stack.append(is_for)
    if not loops:
        return 0.0, outside, []
    return loops[-1][0], outside, [l[0] for l in loops[:-1]]


def shared_lane_lines(launch) -> float:
    """The share of a warp's 32 lines that a per-lane access of ``launch``'s main loop touches, where
    consecutive lanes read one address: the dense scan's summary runs the M+1 recursions of a chunk
    on M+1 consecutive lanes, which load the same A[n] (and u[n]), so a warp's access spans the
    (32 + M) / (M + 1) chunks it holds on average, not 32 (1 for every other launch). Counted as 32,
    its L1 term had put the fifth H100 session's M=16 summaries at 2.8-11x their measured times
    (the other bounds at 0.80-1.01x)."""
    if launch.kernel.__name__ == "_dense_scan" and launch.constexprs["SUMMARY"]:
        columns = launch.constexprs["M"] + 1
        return (32 + columns - 1) / columns / 32
    return 1.0


def _fused_carry_wavefronts(launch, earlier: list[float]) -> float:
    """L1 wavefronts per program of a fused carry's piece loop (STATE 4, CARRY_RUN > 0), on average
    over the launch. Its body, counted once by :func:`global_wavefronts` (RUN loads per map element,
    each a [LANES] tile: LANES wavefronts), assumes every lane active; but lane l of block b's
    program loads maps l * RUN ... only below b (masked-off lanes fetch nothing), and each map sits
    in sectors of its own, so the program fetches b maps, one wavefront per element each: the body
    over RUN x LANES, times b, whose mean over a row's blocks is (n_blocks - 1) / 2 (as the L2 bytes
    of _fused_carry_bytes). At 16 rows of 2^16 samples, M=1, the body counted whole was 2048
    wavefronts per program against 31.5 x 2 fetched."""
    if len(earlier) != 1:
        raise ValueError(f"{launch.kernel.__name__}: expected the fused carry's piece loop alone before the main "
                         f"loop, found {len(earlier)} loops")
    lanes, run, n_blocks = launch.constexprs["BLOCK"], launch.constexprs["CARRY_RUN"], _argument(launch, "n_blocks")
    return earlier[0] / (run * lanes) * (n_blocks - 1) / 2


def shared_wavefronts(body: list[str]) -> float:
    """L1 wavefronts per warp of the shared- and local-memory instructions in ``body`` (a coalesced
    tile's transposes, spills): the bytes a warp moves over 128, at least one (bank conflicts not
    counted)."""
    total = 0.0
    for instruction in body:
        op = _opcode(instruction)
        if op not in SHARED_OPS:
            continue
        full = instruction.split()[1] if instruction.startswith("@") else instruction.split()[0]
        if op in ("LDSM", "STSM"):  # .x4 / .x2 matrices of 8x8 16-bit entries
            count = re.search(r"\.(\d)$", full)
            total += int(count.group(1)) if count else 1
        else:
            width = re.search(r"\.(64|128)\b", full)
            total += max(1.0, (int(width.group(1)) if width else SHARED_OPS[op]) * 32 / 8 / L1_LINE_BYTES)
    return total


def busiest_sm_share(programs: int) -> float:
    """The share of a launch's (equal) programs that its busiest SM runs: programs are dealt out
    whole, so some SM runs ceil(P / SMS) of P. The H100 measured it: the M=16 forward finish, L1-bound,
    took 2161 us on 147 programs (16 x 2^20), 1.8x its one-row time per step on 10 (the busiest SMs
    ran two programs), where work spread evenly over the SMs had predicted 1311 (two programs, 2354)."""
    programs = max(1, programs)
    return math.ceil(programs / SMS) / programs


def issue_seconds(warp_instructions: float, fp64: float, conversions: float, memory_ops: float, programs: int) -> float:
    """The issue bound: cycles on the busiest pipe (dispatch: one warp instruction per scheduler per
    clock) of the busiest SM (one program, e.g. a row's carry, issues on one SM's schedulers
    whatever the GPU's size)."""
    cycles = max(warp_instructions / SCHEDULERS, fp64 * 2 / SCHEDULERS, conversions * 8 / SCHEDULERS, memory_ops)
    return cycles * busiest_sm_share(programs) / CLOCK_HZ


def queued_seconds(memory_s: float, chain_s: float, wait_s: float) -> float:
    """A launch's time T when its latency chain (``chain_s``, of which ``wait_s`` waits for memory)
    shares DRAM with its own traffic (``memory_s`` at full bandwidth): the waits stretch as the
    queue at DRAM fills, by 1 / (1 - rho) with rho = memory_s / T the share of T that DRAM is busy
    (an M/M/1 queue's delay), so T = (chain_s - wait_s) + wait_s / (1 - memory_s / T). Its larger
    root is at least max(chain_s, memory_s): the sum of the two where the chain is all waiting,
    the chain alone where DRAM idles, the bandwidth alone where the chain never waits.

    Taking the largest of the memory and latency bounds instead had put every launch that streams
    from DRAM 1.45-2.14x under its time on the fifth H100 session (eb9f212, launch_times.csv):
    the M=2 summaries and finishes at 16 x 2^20, and the M=16 finishes, whose two bounds are close.
    With the queue the M=2 ones come to 0.99-1.32x, the M=16 finishes to 0.96-1.43x and the M=16
    summaries (a chain mostly arithmetic) to 0.88-0.99x (docs/gpu-notes.md). Only waits for DRAM
    stretch: L2 hits (a carry's maps, a single pass's second read) do not queue there. Launches
    whose data fit in L2 keep the largest bound: the same session's M=2 launches at 16 x 65536,
    timed warm, ran 1.10-1.29x the largest and 0.63-0.75x the queue."""
    wait_s = min(max(wait_s, 0.0), chain_s)
    compute = chain_s - wait_s
    total = compute + memory_s + wait_s
    return (total + math.sqrt(max(total * total - 4 * compute * memory_s, 0.0))) / 2


def _resident_lanes(registers: int, warps: int) -> int:
    """Threads per SM the register file allows (whole programs)."""
    per_program = 32 * warps
    regs = max(registers, 16)
    programs = min(32, REGISTERS_PER_SM // (regs * per_program), THREADS_PER_SM // per_program)
    return max(1, programs) * per_program


def single_pass(launch) -> bool:
    """A finish that runs its block's summary first (triton_scan.single_pass): both loops run every
    iteration, one after the other, and its second read of the inputs comes from L2."""
    return launch.kernel.__name__ == "_finish" and bool(launch.constexprs.get("SINGLE_PASS"))


def lane_loops(launch, compiled) -> list[tuple[int, int, float]]:
    """The loops a launch's programs run ``iterations`` times: each one's first and last index into the
    SASS, and the share of the programs that run it. Most kernels have one, the main loop, that every
    program runs (an earlier loop, a fused carry's piece loop, runs once, with the prologue). A
    long-order summary's programs each run one recursion group (see triton_scan._summary): its first
    loop, the driven recursion (first in the source too, and the only one that loads the inputs), in
    one program of a block's summary_groups, and its last, the homogeneous ones, in the others.
    Counting every program through both (as the model did before 2026-11-28) put the M=16 forward at
    1550 thread-instructions per sample at T=4096, against 1350 with each program through its own
    loop. The code outside both loops (each branch's lane setup and store among it) still counts
    once for every program: an overcount of a branch's setup, a few hundred instructions a program."""
    if not compiled.spans:
        return []
    if single_pass(launch):
        # the block's summary loop first, the finish's lane loop last; between them the wait for the
        # earlier blocks and the fused carry's piece loop, run once (Triton 3.6 adds a span for the
        # wait's divergent fallback, which ends past the last loop)
        spans = sorted(compiled.spans)
        summary, finish = spans[0], spans[-1]
        stores = [_count(compiled.body(*span), ("STG",)) for span in (summary, finish)]
        if len(spans) < 3 or stores[0] or not stores[1]:
            raise ValueError(f"_finish (SINGLE_PASS): expected the summary loop (no stores) first and the lane loop "
                             f"(stores) last, with the wait between, found loops at {spans}")
        return [(*summary, 1.0), (*finish, 1.0)]
    if launch.kernel.__name__ == "_summary" and not launch.constexprs["SCAN"]:
        from allpole_triton.kernels import triton_scan

        spans = sorted(compiled.spans)
        if len(spans) != 2 or spans[0][1] >= spans[1][0]:
            raise ValueError(f"_summary (M={launch.constexprs['M']}): expected the driven and the homogeneous "
                             f"loops one after the other, found loops at {spans}")
        driven, homogeneous = spans
        share = 1 / triton_scan.summary_groups(launch.constexprs["M"], launch.constexprs["R"])
        return [(*driven, share), (*homogeneous, 1 - share)]
    return [(*max(compiled.spans), 1.0)]


def model_launch(launch, compiled, dtype: torch.dtype) -> LaunchModel:
    loops = lane_loops(launch, compiled)
    everything = compiled.reachable
    bodies = [(compiled.body(first, last), share) for first, last, share in loops]
    inside = {k for first, last, _ in loops for k in range(first, last + 1)}
    rest = [i for k, i in enumerate(everything) if k not in inside]
    name = launch.kernel.__name__
    threads = 32 * launch.num_warps
    if launch.lanes:  # lane kernels: lanes x (S / U) bodies
        unroll = launch.constexprs["U"]
        iterations = math.ceil(launch.steps / unroll)
        executing = launch.grid * threads
    else:  # carries: one program per row, iterations = chunks (long) or pieces of blocks (short)
        unroll = 1
        iterations = max(1, launch.steps)
        executing = launch.grid * threads
    warp_factor = executing / 32

    def per_thread(count) -> float:
        """``count`` of what one thread runs, on average: its loops per iteration, the rest once."""
        return iterations * sum(share * count(body) for body, share in bodies) + count(rest)

    loop_instructions = sum(share * len(body) for body, share in bodies)
    thread_instructions = executing * per_thread(len)

    def warp_instructions(ops: tuple[str, ...]) -> float:
        return warp_factor * per_thread(lambda body: _count(body, ops))

    fp64, conversions, memory_ops = (warp_instructions(ops) for ops in (FP64_OPS, CONVERSIONS, MEMORY_OPS))
    issue_s = issue_seconds(thread_instructions / 32, fp64, conversions, memory_ops, launch.grid)
    # L1 throughput: every program's global accesses (TTGIR) and its warps' shared-memory ones (SASS)
    if name in ("_reversed_inputs", "_adjoint_outputs"):
        in_loop, once = 0.0, copy_wavefronts(launch) / launch.grid
    else:
        in_loop, once, earlier = global_wavefronts(compiled.ttgir, launch.num_warps)
        if single_pass(launch):  # the summary loop per iteration too; a fused carry's pieces once
            summary, *pieces = earlier
            in_loop += summary
            once += _fused_carry_wavefronts(launch, pieces) if launch.constexprs["CARRY_RUN"] else sum(pieces)
        elif len(loops) > 1:  # branches, in the same order in the TTGIR
            if len(earlier) != len(loops) - 1:
                raise ValueError(f"{name}: {len(loops)} loops in the SASS, but {len(earlier)} top-level loops before "
                                 f"the last in the TTGIR")
            in_loop = sum(share * body for body, (_, _, share) in zip(earlier + [in_loop], loops))
        elif name == "_finish" and launch.constexprs["STATE"] == 4 and launch.constexprs["CARRY_RUN"]:
            once += _fused_carry_wavefronts(launch, earlier)
        else:
            once += sum(earlier)
    in_loop *= shared_lane_lines(launch)
    l1_wavefronts = launch.grid * (iterations * in_loop + once) + warp_factor * per_thread(shared_wavefronts)
    l1_s = l1_wavefronts * busiest_sm_share(launch.grid) / CLOCK_HZ
    resident_lanes = _resident_lanes(compiled.registers, launch.num_warps)
    moved = _launch_bytes(launch) + _refetched_bytes(launch, resident_lanes // threads * SMS)
    l2_moved = _fused_carry_bytes(launch) + _single_pass_bytes(launch)
    memory_s = moved / BANDWIDTH + l2_moved / L2_BANDWIDTH
    # the loop-carried chain: one warp's prologue (its loads of incoming states and maps, which the
    # summary just wrote: L2 latency; a fused carry's piece loop counted once, as planned on a GPU)
    # and iterations, issued in order (loop_cycles), in as many waves as the SMs' registers allow
    # for lane kernels; the carries run one program per row
    # (the slowest of a summary's branches: a branch's prologue is what comes before its loop, less the
    # other branch's loop)
    resident = resident_lanes * SMS
    waves = math.ceil(executing / resident)

    resident_maps = min(1.0, L2_RESIDENT_BYTES / moved) if moved else 1.0

    def chain_cycles(dram: float, l2: float) -> float:
        if not launch.lanes:  # a carry's maps: what L2 still holds of them, the rest from DRAM
            maps = resident_maps * l2 + (1 - resident_maps) * dram
            return iterations * max((loop_cycles(body, maps) for body, _ in bodies), default=0.0) + maps

        def prologue(first: int) -> float:  # what comes before a loop, less the loops' bodies
            return loop_cycles([i for k, i in enumerate(everything[:first]) if k not in inside], l2, iterations=1)

        if single_pass(launch):  # one after the other: the summary's chain, then the lanes' from L2
            (summary, _), (finish, _) = bodies
            chains = [iterations * (loop_cycles(summary, dram) + loop_cycles(finish, l2)) + prologue(loops[-1][0])]
        else:
            chains = [iterations * loop_cycles(body, dram) + prologue(first)
                      for (body, _), (first, _, _) in zip(bodies, loops)]
        return waves * max(chains, default=loop_cycles(everything, l2, iterations=1)) + dram

    latency_cycles = chain_cycles(DRAM_LATENCY, L2_LATENCY)
    latency_s = latency_cycles / CLOCK_HZ
    # the chain's waits for DRAM (L2 hits do not queue there): what doubling DRAM's latency adds to it
    memory_wait_s = max(chain_cycles(2 * DRAM_LATENCY, L2_LATENCY) - latency_cycles, 0.0) / CLOCK_HZ
    # a launch that streams more than L2 holds from DRAM queues its loads there (queued_seconds)
    loaded_s = queued_seconds(moved / BANDWIDTH, latency_s, memory_wait_s) if moved > L2_BYTES else latency_s
    # a single pass's ticket and bits are zeroed before it (Launch.run): a fill kernel, one more gap
    fills = 1 if single_pass(launch) else 0
    predicted = max(memory_s, issue_s, l1_s, loaded_s) + (1 + fills) * LAUNCH_SECONDS
    return LaunchModel(
        name, launch.grid, launch.lanes, iterations, unroll, round(loop_instructions), len(rest), compiled.registers,
        thread_instructions, fp64, conversions, memory_ops, moved, l2_moved, memory_s, issue_s, l1_wavefronts, l1_s,
        latency_s, predicted, max((_count(body, ("LDL", "STL")) for body, _ in bodies), default=0), fills,
        memory_wait_s, loaded_s,
    )


def pass_launches(B: int, T: int, M: int, reverse: bool, dtype: torch.dtype = torch.float32) -> list:
    """The launches of one pass of the filter over (B, T, M) meta tensors (time-varying
    coefficients; the backward with grad_a), planned as a GPU of SMS SMs runs them."""
    from allpole_triton.kernels import triton_scan

    meta = torch.device("meta")
    u = torch.empty(B, T, dtype=dtype, device=meta)
    zi = torch.empty(B, M, dtype=dtype, device=meta)
    extra = {}
    if reverse:
        extra = dict(tail=torch.empty_like(zi), y=torch.empty_like(u), grad_a=torch.empty(B, T, M, dtype=dtype, device=meta))
    return triton_scan.plan(u, torch.empty(B, T, M, dtype=dtype, device=meta), zi, torch.empty_like(u),
                            reverse=reverse, sms=SMS, **extra)[0]


def model_case(B: int, T: int, M: int, passes: str, cache: dict, dtype: torch.dtype = torch.float32) -> CaseModel:
    from . import sm90

    case = CaseModel(B, T, M, passes)
    planned = []
    if passes == "dense":
        from allpole_triton.kernels import triton_recurrence

        meta = torch.device("meta")
        u = torch.empty(B, T, M, dtype=dtype, device=meta)
        A = torch.empty(B, T, M, M, dtype=dtype, device=meta)
        h0 = torch.empty(B, M, dtype=dtype, device=meta)
        planned = triton_recurrence.plan(A, u, h0, torch.empty_like(u), sms=SMS)
    for reverse in {"fwd": [False], "fwdbwd": [False, True], "dense": []}[passes]:
        planned += pass_launches(B, T, M, reverse, dtype)
    for launch in planned:
        key = sm90.variant_key(launch)
        if key not in cache:
            cache[key] = sm90.compile_launch(launch)
        case.launches.append(model_launch(launch, cache[key], dtype))
    return case


# linear_recurrence's dense scan (real orders up to triton_recurrence.MAX_ORDER), forward only
DENSE_M = [2, 4, 8, 16]


def run(B=None, T=None, M=None, passes=("fwd", "fwdbwd", "dense"), progress=None) -> list[dict]:
    cache: dict = {}
    rows = []
    from allpole_triton.kernels.triton_recurrence import MAX_ORDER

    orders = {p: [m for m in (M or DENSE_M) if m <= MAX_ORDER] if p == "dense" else (M or GRID["M"]) for p in passes}
    cases = [(b, t, m, p) for p in passes for m in orders[p] for b in (B or GRID["B"]) for t in (T or GRID["T"])]
    for b, t, m, p in (progress(cases) if progress else cases):
        rows.append(model_case(b, t, m, p, cache).totals())
    return rows


HEADER = ("The sm_90 model (a model: nothing here was measured; bench/gpu_session.sh puts measured times "
          "beside it). GPU times only: an eager call's host cost is not modelled (host_times measures it; "
          "the H100 found M <= 4 passes host-bound up to 2^24 samples). H100 SXM: 132 SMs, 3.0 TB/s, 1.755 GHz; "
          "fp32, time-varying coefficients. Pass `dense`: linear_recurrence's forward with dense A (B, T, M, M).")


def measured_times(rows: list[dict]) -> dict:
    """(pass, B, T, M) -> median microseconds of our Triton backend, from allpole-bench's results rows."""
    return {(r["pass"], r["B"], r["T"], r["M"]): r["time_s"] * 1e6 for r in rows
            if r.get("backend") == "triton" and r.get("coeffs") == "tv" and r.get("dtype") == "float32"
            and r.get("status") == "ok" and r.get("time_s")}


def markdown(rows: list[dict], measured: dict | None = None) -> str:
    import triton

    lines = [HEADER + f" Compiled by Triton {triton.__version__} (the GPU machines run 3.6; `make model` uses "
             "it where `.venv/triton36` exists, since the two compile the same kernels differently).", "",
             "| pass | B | T | M | launches | thread-instr/sample | bytes/sample (floor) | floor µs | predicted µs | predicted/floor |"
             + (" measured µs | measured/predicted |" if measured else ""),
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if measured else "")]
    for r in rows:
        line = (f"| {r['passes']} | {r['B']} | {r['T']} | {r['M']} | {r['launches']} | {r['thread_instructions_per_sample']:.1f} | "
                f"{r['bytes_per_sample']:.1f}{' + %.1f L2' % r['l2_bytes_per_sample'] if r.get('l2_bytes_per_sample') else ''} "
                f"({r['floor_bytes_per_sample']:.0f}) | {r['memory_floor_us']:.1f} | "
                f"{r['predicted_us']:.1f} | {r['predicted_over_floor']:.2f} |")
        if measured:
            got = measured.get((r["passes"], r["B"], r["T"], r["M"]))
            line += f" {got:.1f} | {got / r['predicted_us']:.2f} |" if got else " – | – |"
        lines.append(line)
    lines += ["", "Per kernel: SASS instructions per main-loop iteration (one unrolled body of U steps for the lane "
              "kernels; one chunk, or one block of carries, for the carries; a long-order summary's two loops, "
              "driven and homogeneous, averaged over the programs that run each), registers, and the spilled "
              "(local-memory) accesses per iteration of the worst loop where there are any: the model charges "
              "those as L1 hits, and an H100 measured them dearer (see the module's docstring)."]
    first, spills = {}, {}  # a kernel's first variant, and the most any of its variants spills
    for r in rows:
        for k in r["kernels"]:
            key = (r["M"], k["kernel"], k["unroll"])
            first.setdefault(key, k)
            spills[key] = max(spills.get(key, 0), k.get("loop_spills", 0))
    for (M, name, unroll), k in first.items():
        lines.append(f"- M={M} {name}: {k['loop_instructions']} instructions per iteration of {unroll} step(s), "
                     f"{k['registers']} registers" + (f", up to {spills[M, name, unroll]} spilled accesses"
                                                       if spills[M, name, unroll] else ""))
    return "\n".join(lines)
