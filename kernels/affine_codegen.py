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
        pick = f"_pick({src}, {slot}, {r if r < M else 0})"
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
    ne = M * (M + 1)
    planes = ("re", "im") if cplx else ("",)
    state = [f"s{q}_{p}" if p else f"s{q}" for q in range(M) for p in planes]
    outs = [n.replace("s", "o", 1) for n in state]
    names = [n for n, _, _ in _elements(M, cplx)]
    totals = [n.replace("f", "t", 1) for n in names]
    maps = [n.replace("f", "g", 1) for n in names]
    suffix = _suffix(M, cplx)

    def offset(base: str, index: str, plane: str) -> str:
        return f"2 * ({base} + {index}) + {0 if plane == 're' else 1}" if plane else f"{base} + {index}"

    def identity(e: int, plane: str) -> float:
        q, r = divmod(e, M + 1)
        return 1.0 if (r == q and plane in ("", "re")) else 0.0

    def load_maps(indent: str) -> list[str]:
        out = [f"{indent}src = row * n_chunks + (b + 1).to(tl.int64) * group - 1"]
        for name, e, plane in _elements(M, cplx):
            g = name.replace("f", "g", 1)
            out.append(f"{indent}{g} = tl.load(agg_ptr + {offset(f'src * {ne}', str(ne - 1 - e), plane)}, "
                       f"mask=valid, other={identity(e, plane)})")
        return out

    def stores(indent: str) -> list[str]:
        out = []
        for i, o in enumerate(outs):
            q, plane = divmod(i, len(planes))
            out.append(f"{indent}tl.store(out_ptr + {offset(f'(row * n_blocks + b + 1) * {M}', str(M - 1 - q), planes[plane])}, "
                       f"{o}, mask=valid)")
        return out

    lines = []
    for i, s_name in enumerate(state):
        q, plane = divmod(i, len(planes))
        lines.append(f"    {s_name} = tl.load(zi_ptr + {offset(f'row * {M}', str(q), planes[plane])}, mask=from_rest == 0, "
                     "other=0.0).to(tl.float64)")
    for i, s_name in enumerate(state):
        q, plane = divmod(i, len(planes))
        lines.append(f"    tl.store(out_ptr + {offset(f'row * n_blocks * {M}', str(M - 1 - q), planes[plane])}, {s_name})")
    lines.append("    lane = tl.arange(0, BLOCK)")
    lines.append("    n_maps = n_blocks - 1")
    lines.append("    for piece in range(0, n_maps, BLOCK * RUN):")
    lines.append("        if RUN == 1:  # a map per lane: the inclusive scan maps s to every block's state at once")
    lines.append("            b = piece + lane")
    lines.append("            valid = b < n_maps")
    lines += load_maps("            ")
    lines.append(f"            {', '.join(maps)}, = tl.associative_scan(({', '.join(maps)},), 0, combine_{suffix})")
    lines.append(f"            {', '.join(outs)}, = apply_{suffix}({', '.join(maps + state)})")
    lines += stores("            ")
    lines.append("        else:")
    for name, e, plane in _elements(M, cplx):
        t = name.replace("f", "t", 1)
        lines.append(f"            {t} = tl.full([BLOCK], {identity(e, plane)}, tl.float64)")
    lines.append("            for k in tl.static_range(RUN):  # the run before this lane's")
    lines.append("                b = piece + (lane - 1) * RUN + k")
    lines.append("                valid = (lane > 0) & (b < n_maps)")
    lines += load_maps("                ")
    lines.append(f"                {', '.join(totals)}, = combine_{suffix}({', '.join(totals + maps)})")
    lines.append(f"            {', '.join(totals)}, = tl.associative_scan(({', '.join(totals)},), 0, combine_{suffix})")
    lines.append(f"            {', '.join(outs)}, = apply_{suffix}({', '.join(totals + state)})")
    lines.append("            for k in tl.static_range(RUN):  # this lane's run")
    lines.append("                b = piece + lane * RUN + k")
    lines.append("                valid = b < n_maps")
    lines += load_maps("                ")
    lines.append(f"                {', '.join(outs)}, = apply_{suffix}({', '.join(maps + outs)})")
    lines += stores("                ")
    lines.append("        # past the row's last map a lane walks identity maps: the last lane ends where the piece does")
    for s_name, o in zip(state, outs):
        lines.append(f"        {s_name} = tl.sum(tl.where(lane == BLOCK - 1, {o}, 0.0), axis=0)")
    return (
        f"@triton.jit\ndef carry_row_{suffix}(agg_ptr, zi_ptr, out_ptr, row, n_chunks, n_blocks, group, "
        "from_rest, BLOCK: tl.constexpr, RUN: tl.constexpr):\n"
        + "\n".join(lines) + "\n"
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
        + "\n"
    )


def render() -> str:
    parts = [
        '"""Generated by kernels/affine_codegen.py: do not edit by hand (see that file)."""\n'
        "import triton\nimport triton.language as tl\n\nfrom .triton_tiles import pick as _pick\n"
    ]
    for M in range(1, SCAN_MAX_ORDER + 1):
        for cplx in (False, True):
            parts += [_combine(M, cplx), _apply(M, cplx), _scan_store(M, cplx), _carry_row(M, cplx)]
    parts.append(_dispatch())
    return "\n\n".join(parts)


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}", file=sys.stderr)
