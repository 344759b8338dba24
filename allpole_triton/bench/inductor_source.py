"""The Triton kernels as ``torch.compile``'s Inductor rebuilds them, and what that rebuild breaks.

Inductor does not launch a ``triton_op``'s kernels as they are: it copies each kernel's source and
the transitive closure of the ``@triton.jit`` functions it calls into its own module, keyed by the
names the callers use, and compiles that copy (``user_defined_triton_kernel_transitive_closure_source_code``).
The copy holds no modules, no aliases (``from m import f as g`` copies ``def f``, so a call of
``g`` fails) and no globals but ints, strings, bools and constexprs, and two helpers of one name in
different modules become one. A kernel that breaks any of this compiles and runs in eager mode and
fails only under ``torch.compile`` with Inductor on a GPU (the H200 found it). ``problems`` finds
it on any machine; ``tests/compile_for_sm90.py`` compiles the copies for sm_90 and compares their
SASS with the originals'. Run without TRITON_INTERPRET (the interpreter's functions are not
``JITFunction`` s, which Inductor's walk does not follow).
"""
from __future__ import annotations

import dis
import importlib.util
import json
import pathlib
import sys
import tempfile
import types

import triton
from triton.runtime.jit import JITFunction

_HEADER = "import triton\nimport triton.language as tl\n\n\n@triton.jit\n"  # what Inductor's module starts with


def _closure_source(kernel: JITFunction) -> str:
    from torch._inductor.codegen.wrapper import user_defined_triton_kernel_transitive_closure_source_code

    return _HEADER + user_defined_triton_kernel_transitive_closure_source_code(kernel)


def regenerate(kernel: JITFunction, folder: pathlib.Path | None = None) -> types.ModuleType:
    """Inductor's copy of ``kernel`` and its callees, imported from a file (Triton reads sources)."""
    folder = pathlib.Path(folder or tempfile.mkdtemp(prefix="allpole-inductor-"))
    path = folder / f"inductor_copy_of_{kernel.__name__}.py"
    path.write_text(_closure_source(kernel))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _global_loads(fn: JITFunction) -> list[str]:
    return list(dict.fromkeys(i.argval for i in dis.get_instructions(fn.fn) if i.opname == "LOAD_GLOBAL"))


def _same_value(original, copied) -> bool:
    if isinstance(original, triton.language.constexpr):
        return isinstance(copied, triton.language.constexpr) and copied.value == original.value
    return copied is original or (type(copied) is type(original) and copied == original)


def problems(kernel: JITFunction, folder: pathlib.Path | None = None) -> list[str]:
    """Every global that ``kernel`` or a function it calls reads and Inductor's copy lacks or binds to
    something else: a missing name, a module, an alias, a helper shadowed by a namesake."""
    copy = vars(regenerate(kernel, folder))
    found, todo, seen = [], [kernel], {id(kernel)}
    while todo:
        fn = todo.pop()
        for name in _global_loads(fn):
            if name not in fn.fn.__globals__:
                continue  # a builtin
            original, copied = fn.fn.__globals__[name], copy.get(name, None)
            where = f"{fn.fn.__module__}.{fn.__name__} reads {name}"
            if isinstance(original, JITFunction):
                if not isinstance(copied, JITFunction) or copied.src != original.src:
                    bound = (f"binds {name} to {copied.__name__} of other source" if isinstance(copied, JITFunction)
                             else "lacks it" if name not in copy else f"binds it to {copied!r}")
                    found.append(f"{where} ({original.fn.__module__}.{original.__name__}): the copy {bound}")
                elif id(original) not in seen:
                    seen.add(id(original))
                    todo.append(original)
            elif isinstance(original, types.ModuleType):
                if copied is not original:
                    found.append(f"{where}, a module, which the copy does not import")
            elif name not in copy or not _same_value(original, copy[name]):
                found.append(f"{where} = {original!r}, which the copy " + ("lacks" if name not in copy else f"binds to {copy[name]!r}"))
    return found


def kernel_functions() -> list[JITFunction]:
    """Every ``@triton.jit`` function of the package's Triton modules: each may be a kernel's root."""
    from allpole_triton.kernels import triton_adjoint, triton_affine, triton_recurrence, triton_scan, triton_tiles

    modules = (triton_adjoint, triton_affine, triton_recurrence, triton_scan, triton_tiles)
    return [f for m in modules for f in vars(m).values() if isinstance(f, JITFunction) and f.fn.__module__ == m.__name__]


def package_problems(folder: pathlib.Path | None = None) -> dict[str, list[str]]:
    """``problems`` of each of :func:`kernel_functions`, by qualified name."""
    folder = pathlib.Path(folder or tempfile.mkdtemp(prefix="allpole-inductor-"))
    return {f"{f.fn.__module__}.{f.__name__}": problems(f, folder) for f in kernel_functions()}


def main() -> None:
    """``python -m allpole_triton.bench.inductor_source``: the functions with problems, as JSON."""
    report = package_problems()
    json.dump({"triton": triton.__version__, "checked": len(report), "problems": {k: v for k, v in report.items() if v}}, sys.stdout)


if __name__ == "__main__":
    main()
