"""Writes ``triton_affine.py``: the affine-map scan functions for orders M <= SCAN_MAX_ORDER.

A chunk of the recursion maps its incoming state s (M values) to its outgoing one as
s -> Phi s + z. ``tl.associative_scan`` composes such maps across lanes, but its combine function
takes one scalar per element, so each order needs its own function over M*(M+1) (complex: twice
that) arguments. They are generated rather than written by hand; run
``python -m allpole_triton.kernels.affine_codegen`` (or ``python kernels/affine_codegen.py``)
after changing this file. ``tests/test_triton.py`` checks that the committed file is current.

Element order everywhere: Phi[q][r] row by row, then z[q]. In memory, element e of a chunk's
map sits at offset ``M*(M+1) - 1 - e``: the kernels read per-lane tiles of these with offsets that
decrease along the tile, so Triton keeps each lane's tile inside one thread.
"""
from __future__ import annotations

import pathlib
import sys

SCAN_MAX_ORDER = 4
OUTPUT = pathlib.Path(__file__).with_name("triton_affine.py")


def _names(prefix: str, M: int, cplx: bool) -> list[str]:
    """Flat argument names of one map, in element order, planes (re, im) interleaved."""
    elems = [f"{prefix}{q}{r}" for q in range(M) for r in range(M)] + [f"{prefix}z{q}" for q in range(M)]
    return [f"{e}_{p}" for e in elems for p in ("re", "im")] if cplx else elems


def _compose(M: int, cplx: bool, first: str, second: str) -> list[str]:
    """Expressions of second o first: (G F, G z_f + z_g), in element order."""
    def mul_add(terms: list[tuple[str, str]], extra: str | None) -> list[str]:
        if not cplx:
            out = " + ".join(f"{a} * {b}" for a, b in terms)
            return [out + (f" + {extra}" if extra else "")]
        re = " + ".join(f"{a}_re * {b}_re - {a}_im * {b}_im" for a, b in terms)
        im = " + ".join(f"{a}_re * {b}_im + {a}_im * {b}_re" for a, b in terms)
        return [re + (f" + {extra}_re" if extra else ""), im + (f" + {extra}_im" if extra else "")]

    g = lambda q, k: f"{second}{q}{k}"
    f = lambda k, r: f"{first}{k}{r}"
    out: list[str] = []
    for q in range(M):
        for r in range(M):
            out += mul_add([(g(q, k), f(k, r)) for k in range(M)], None)
    for q in range(M):
        out += mul_add([(g(q, k), f"{first}z{k}") for k in range(M)], f"{second}z{q}")
    return out


def _suffix(M: int, cplx: bool) -> str:
    return f"{M}{'c' if cplx else 'r'}"


def _combine(M: int, cplx: bool) -> str:
    args = ", ".join(_names("f", M, cplx) + _names("g", M, cplx))
    body = ",\n        ".join(_compose(M, cplx, "f", "g"))
    return (
        f"@triton.jit\ndef combine_{_suffix(M, cplx)}({args}):\n"
        f"    return (\n        {body},\n    )\n"
    )


def _apply(M: int, cplx: bool) -> str:
    """(Phi s + z) for a map given element by element and a state given component by component."""
    f = _names("f", M, cplx)
    s = [f"s{q}_{p}" for q in range(M) for p in ("re", "im")] if cplx else [f"s{q}" for q in range(M)]
    lines = []
    for q in range(M):
        if cplx:
            re = " + ".join(f"f{q}{k}_re * s{k}_re - f{q}{k}_im * s{k}_im" for k in range(M)) + f" + fz{q}_re"
            im = " + ".join(f"f{q}{k}_re * s{k}_im + f{q}{k}_im * s{k}_re" for k in range(M)) + f" + fz{q}_im"
            lines += [re, im]
        else:
            lines.append(" + ".join(f"f{q}{k} * s{k}" for k in range(M)) + f" + fz{q}")
    body = ",\n        ".join(lines)
    return f"@triton.jit\ndef apply_{_suffix(M, cplx)}({', '.join(f + s)}):\n    return (\n        {body},\n    )\n"


def _elements(M: int, cplx: bool) -> list[tuple[str, int, str]]:
    """(name, flat element index, plane) in argument order."""
    out = []
    for e, (q, r) in enumerate([(q, r) for q in range(M) for r in range(M + 1)]):
        name = f"f{q}{r}" if r < M else f"fz{q}"
        for plane in (("re", "im") if cplx else ("",)):
            out.append((f"{name}_{plane}" if plane else name, e, plane))
    # argument order is Phi row by row, then z
    order = {n: i for i, n in enumerate(_names("f", M, cplx))}
    return sorted(out, key=lambda item: order[item[0]])


def _scan_store(M: int, cplx: bool) -> str:
    """K1 (short orders): pick the chunk's map out of the in-thread state tiles, scan it across the
    block's lanes (inclusive prefixes), and store each prefix."""
    ne = M * (M + 1)
    lines = []
    for name, e, plane in _elements(M, cplx):
        q = e // (M + 1)
        r = e % (M + 1)
        slot = M - 1 - q  # the circular buffer's slot of state component q
        src = f"h_{plane or 're'}" if r < M else f"d_{plane or 're'}"
        pick = f"pick({src}, {slot}, {r if r < M else 0})"
        identity = "1.0" if (r == q and plane in ("", "re")) else "0.0"
        lines.append(f"    {name} = tl.where(valid, {pick}, {identity})")
    names = [n for n, _, _ in _elements(M, cplx)]
    lines.append(f"    ({', '.join(names)},) = tl.associative_scan(({', '.join(names)},), 0, combine_{_suffix(M, cplx)})")
    for name, e, plane in _elements(M, cplx):
        offset = f"base * {ne} + {ne - 1 - e}"
        if cplx:
            offset = f"2 * ({offset}) + {0 if plane == 're' else 1}"
        lines.append(f"    tl.store(out_ptr + {offset}, {name}, mask=valid)")
    return (
        f"@triton.jit\ndef scan_store_{_suffix(M, cplx)}(h_re, h_im, d_re, d_im, valid, out_ptr, base):\n"
        + "\n".join(lines) + "\n"
    )


class _Maps:
    """Names and code lines shared by the generators that read a row's block maps (the carry
    launch and the carry fused into the finish)."""

    def __init__(self, M: int, cplx: bool):
        self.M, self.cplx = M, cplx
        self.planes = ("re", "im") if cplx else ("",)
        self.size = M * (M + 1)
        self.state = [f"s{q}_{p}" if p else f"s{q}" for q in range(M) for p in self.planes]
        self.outs = [n.replace("s", "o", 1) for n in self.state]
        names = [n for n, _, _ in _elements(M, cplx)]
        self.totals = [n.replace("f", "t", 1) for n in names]
        self.maps = [n.replace("f", "g", 1) for n in names]
        self.suffix = _suffix(M, cplx)

    @staticmethod
    def offset(base: str, index: str, plane: str) -> str:
        return f"2 * ({base} + {index}) + {0 if plane == 're' else 1}" if plane else f"{base} + {index}"

    def identity(self, e: int, plane: str) -> float:
        q, r = divmod(e, self.M + 1)
        return 1.0 if (r == q and plane in ("", "re")) else 0.0

    def load_state(self) -> list[str]:
        """The state entering the row: zi, or rest when from_rest is 1."""
        lines = []
        for i, s_name in enumerate(self.state):
            q, plane = divmod(i, len(self.planes))
            lines.append(f"    {s_name} = tl.load(zi_ptr + {self.offset(f'row * {self.M}', str(q), self.planes[plane])}, "
                         "mask=from_rest == 0, other=0.0).to(tl.float64)")
        return lines

    def load(self, indent: str) -> list[str]:
        """Block b's map (the inclusive prefix at its last chunk) into g*, identity where not valid."""
        out = [f"{indent}src = row * n_chunks + (b + 1).to(tl.int64) * group - 1"]
        for name, e, plane in _elements(self.M, self.cplx):
            out.append(f"{indent}{name.replace('f', 'g', 1)} = tl.load(agg_ptr + "
                       f"{self.offset(f'src * {self.size}', str(self.size - 1 - e), plane)}, "
                       f"mask=valid, other={self.identity(e, plane)})")
        return out

    def compose_run(self, indent: str, first: str, valid: str, comment: str = "") -> list[str]:
        """t* = a lane's run of RUN maps composed, map k being block ``first + k`` where ``valid``
        (identity elsewhere). The first map is taken as it is: composing it onto the identity would
        cost a whole composition per run."""
        inner = indent + "    "
        return ([f"{indent}for k in tl.static_range(RUN):{comment}",
                 f"{inner}b = {first} + k",
                 f"{inner}valid = {valid}"]
                + self.load(inner)
                + [f"{inner}if k == 0:",
                   f"{inner}    {', '.join(self.totals)}, = {', '.join(self.maps)},",
                   f"{inner}else:",
                   f"{inner}    {', '.join(self.totals)}, = combine_{self.suffix}({', '.join(self.totals + self.maps)})"])

    def scan_and_apply(self, indent: str) -> list[str]:
        """Compose the lanes' runs (inclusive scan across lanes) and apply each prefix to s into o*."""
        return [f"{indent}{', '.join(self.totals)}, = tl.associative_scan(({', '.join(self.totals)},), 0, combine_{self.suffix})",
                f"{indent}{', '.join(self.outs)}, = apply_{self.suffix}({', '.join(self.totals + self.state)})"]

    def last_lane(self, indent: str, lanes: str) -> list[str]:
        """s* = the last lane's o* (past the row's last map lanes compose identities, so the last
        lane ends where the piece does)."""
        return [f"{indent}{s_name} = tl.sum(tl.where(lane == {lanes} - 1, {o}, 0.0), axis=0)"
                for s_name, o in zip(self.state, self.outs)]


def _carry_row(M: int, cplx: bool) -> str:
    """K2 (short orders), one row: block b's map is the inclusive prefix stored at its last chunk,
    and the state entering block b+1 is every map up to b applied to the state entering the row
    (zi, or rest when from_rest is 1). Stored component q at M-1-q (decreasing offsets again).

    A piece covers BLOCK * RUN maps, lane l owning the run of RUN maps from l * RUN. With runs of
    one, an inclusive scan of the maps gives every block's state. Longer runs cut the pieces walked
    one after another (each a memory round trip and a scan on the chain) when the maps outnumber
    the lanes: lane l first composes the run before its own (lane 0 none), one scan across lanes
    turns those into the map of everything before lane l's run, and lane l walks its own run from
    its incoming state (its maps loaded twice)."""
    m = _Maps(M, cplx)

    def stores(indent: str) -> list[str]:
        out = []
        for i, o in enumerate(m.outs):
            q, plane = divmod(i, len(m.planes))
            out.append(f"{indent}tl.store(out_ptr + {m.offset(f'(row * n_blocks + b + 1) * {M}', str(M - 1 - q), m.planes[plane])}, "
                       f"{o}, mask=valid)")
        return out

    lines = m.load_state()
    for i, s_name in enumerate(m.state):
        q, plane = divmod(i, len(m.planes))
        lines.append(f"    tl.store(out_ptr + {m.offset(f'row * n_blocks * {M}', str(M - 1 - q), m.planes[plane])}, {s_name})")
    lines.append("    lane = tl.arange(0, BLOCK)")
    lines.append("    n_maps = n_blocks - 1")
    lines.append("    for piece in range(0, n_maps, BLOCK * RUN):")
    lines.append("        if RUN == 1:  # a map per lane: the inclusive scan maps s to every block's state at once")
    lines.append("            b = piece + lane")
    lines.append("            valid = b < n_maps")
    lines += m.load("            ")
    lines.append(f"            {', '.join(m.maps)}, = tl.associative_scan(({', '.join(m.maps)},), 0, combine_{m.suffix})")
    lines.append(f"            {', '.join(m.outs)}, = apply_{m.suffix}({', '.join(m.maps + m.state)})")
    lines += stores("            ")
    lines.append("        else:")
    lines += m.compose_run("            ", "piece + (lane - 1) * RUN", "(lane > 0) & (b < n_maps)", "  # the run before this lane's")
    lines += m.scan_and_apply("            ")
    lines.append("            for k in tl.static_range(RUN):  # this lane's run")
    lines.append("                b = piece + lane * RUN + k")
    lines.append("                valid = b < n_maps")
    lines += m.load("                ")
    lines.append(f"                {', '.join(m.outs)}, = apply_{m.suffix}({', '.join(m.maps + m.outs)})")
    lines += stores("                ")
    lines += m.last_lane("        ", "BLOCK")
    return (
        f"@triton.jit\ndef carry_row_{m.suffix}(agg_ptr, zi_ptr, out_ptr, row, n_chunks, n_blocks, group, "
        "from_rest, BLOCK: tl.constexpr, RUN: tl.constexpr):\n"
        + "\n".join(lines) + "\n"
    )


def _block_state(M: int, cplx: bool) -> str:
    """The carry fused into the finish (short orders, rows of few blocks): the state entering block
    ``block`` of one row, from the maps of the blocks before it, computed by that block's own program
    instead of a carry launch. A piece covers LANES * RUN maps, lane l composing the run from
    l * RUN (identity past ``block``); a scan across the lanes composes the runs, and the last
    lane's total, applied to the state entering the piece, enters the next (RUN 0: no maps, the
    row's incoming state). Returned as the tile that ``_incoming_state`` reads the carried state
    into: component k at r == k, 1 at r == M."""
    m = _Maps(M, cplx)
    lines = m.load_state()
    lines.append("    if RUN > 0:  # RUN 0: rows of one block, no maps")
    lines.append("        lane = tl.arange(0, LANES)")
    lines.append("        for piece in range(0, block, LANES * RUN):")
    lines += m.compose_run("            ", "piece + lane * RUN", "b < block")
    lines += m.scan_and_apply("            ")
    lines += m.last_lane("            ", "LANES")
    for p, plane in enumerate(m.planes):
        tile = f"tl.where(r == {M}, 1.0, 0.0)" if plane in ("", "re") else "0.0"
        for q in reversed(range(M)):
            tile = f"tl.where(r == {q}, {m.state[q * len(m.planes) + p]}, {tile})"
        lines.append(f"    b_{plane or 're'} = {tile}")
    if not cplx:
        lines.append("    b_im = b_re * 0.0")
    return (
        f"@triton.jit\ndef block_state_{m.suffix}(agg_ptr, zi_ptr, row, block, n_chunks, group, from_rest, r, "
        "LANES: tl.constexpr, RUN: tl.constexpr):\n" + "\n".join(lines) + "\n    return b_re, b_im\n"
    )


def _dispatch() -> str:
    """One entry point per role that picks the generated function by (M, IS_COMPLEX)."""
    def branches(call: str, indent: str) -> str:
        out = []
        for M in range(1, SCAN_MAX_ORDER + 1):
            for cplx in (False, True):
                kw = "if" if not out else "elif"
                out.append(f"{indent}{kw} M == {M} and IS_COMPLEX == {cplx}:\n{indent}    {call.format(s=_suffix(M, cplx))}")
        return "\n".join(out)

    return (
        "@triton.jit\n"
        "def scan_store(h_re, h_im, d_re, d_im, valid, out_ptr, base, M: tl.constexpr, IS_COMPLEX: tl.constexpr):\n"
        '    """Inclusive prefixes of the block\'s chunk maps, stored per chunk (see scan_store_*)."""\n'
        + branches("scan_store_{s}(h_re, h_im, d_re, d_im, valid, out_ptr, base)", "    ")
        + "\n\n\n@triton.jit\n"
        "def carry_row(agg_ptr, zi_ptr, out_ptr, row, n_chunks, n_blocks, group, from_rest, BLOCK: tl.constexpr,\n"
        "              RUN: tl.constexpr, M: tl.constexpr, IS_COMPLEX: tl.constexpr):\n"
        '    """Every block\'s incoming state for one row (see carry_row_*)."""\n'
        + branches("carry_row_{s}(agg_ptr, zi_ptr, out_ptr, row, n_chunks, n_blocks, group, from_rest, BLOCK, RUN)", "    ")
        + "\n\n\n@triton.jit\n"
        "def block_state(agg_ptr, zi_ptr, row, block, n_chunks, group, from_rest, r, LANES: tl.constexpr,\n"
        "                RUN: tl.constexpr, M: tl.constexpr, IS_COMPLEX: tl.constexpr):\n"
        '    """The state entering one block, from the maps of the blocks before it (see block_state_*)."""\n'
        + branches("return block_state_{s}(agg_ptr, zi_ptr, row, block, n_chunks, group, from_rest, r, LANES, RUN)", "    ")
        + "\n"
    )


def render() -> str:
    parts = [
        '"""Generated by kernels/affine_codegen.py: do not edit by hand (see that file)."""\n'
        "import triton\nimport triton.language as tl\n\nfrom .triton_tiles import pick\n"
    ]
    for M in range(1, SCAN_MAX_ORDER + 1):
        for cplx in (False, True):
            parts += [_combine(M, cplx), _apply(M, cplx), _scan_store(M, cplx), _carry_row(M, cplx), _block_state(M, cplx)]
    parts.append(_dispatch())
    return "\n\n".join(parts)


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}", file=sys.stderr)
