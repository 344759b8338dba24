"""GPU failure modes made visible under Triton's interpreter.

On a GPU, a kernel that reads outside its tensors, reads memory nothing wrote, uses a masked-off
load's value or depends on the order its programs run in gives wrong, often non-finite, output. The
interpreter hides all four: out-of-bounds addresses read whatever host memory is there, a fresh
CPU allocation is often zeros, masked-off loads give zeros and programs run one after another in
grid order. :func:`install` makes the interpreter

- check every active load and store against the launch's tensors (inside one of them, not
  necessarily the one the pointer came from, and aligned), raising :class:`SanitizerError` with
  the kernel's name;
- raise as well when a program loads an element that a program of the same launch stored, or
  stores one that another program stored or loaded: across programs that is a race, and a load of
  a program's own store needs a barrier that Triton does not insert for global memory (when the
  two threads differ, which the interpreter cannot tell, so it is flagged too). Loads the kernel
  synchronises are let through: a program's own store once it has passed a ``tl.debug_barrier``,
  and another program's store made before that program's last barrier before its release atomic
  on an address that this one has since read with an acquire atomic, once this one has passed a
  barrier after the acquire (``sem`` release, acquire or acq_rel; every atomic is a
  read-modify-write, which continues the release sequences of the releases before it on that
  address, so the acquire sees them all; not transitively). Threads are not told apart, so both
  barriers are required, as if the stores, the atomic and the loads were each another thread's (a
  scalar atomic is one thread's). What the kernel tested of the value it acquired (which blocks'
  bits) is not checked: running programs one after another, every earlier release has happened;
- give NaN (or a large integer) in the masked-off lanes of a block load without ``other`` (a
  GPU leaves them undefined);
- run every launch's programs in reverse grid order;
- check every alignment hint (``tl.multiple_of``, the ``tt.divisibility`` attribute) against the
  values it is put on: the compiled kernel trusts it to issue vector loads, and a false one reads
  misaligned vectors on a GPU while the interpreter ignores it. Every value must be a multiple,
  which is what the kernels promise (their lanes' row starts); Triton reads a hint on a contiguous
  range as one on each run's first value, which this would flag;

and makes ``torch.empty``, ``torch.empty_like``, ``torch.empty_strided`` and ``Tensor.new_empty``
(``_strided``) fill floating-point tensors with NaN, so that an output or scratch element no kernel wrote shows up in the results.

A scalar load's masked-off value cannot be poisoned: the interpreter's ``tl.load`` drops an
``other`` of one element equal to 0 (it tests the value's truth), so ``other=0.0`` and no ``other``
reach the builder alike there (a block load's ``other`` is broadcast first and arrives).
``tests/test_sanitizer.py`` checks the kernels' source for masked loads without ``other`` too.

It relies on the interpreter's internals (``GridExecutor._init_args_hst``, the builder's
``create_masked_load``/``create_masked_store`` and ``set_grid_idx``, ``TensorHandle.set_attr``). :func:`install` raises if they
are gone, and ``tests/test_sanitizer.py`` checks that a bad kernel is caught.
"""
from __future__ import annotations

import functools

import numpy as np
import torch


class SanitizerError(AssertionError):
    """A kernel accessed memory a GPU would not let it access safely."""


# The running launch: kernel name, sorted disjoint [lo, hi) byte ranges of its tensor arguments,
# and per range the program (1 + linear id; 0: none) that stored each 2-byte word, and the one that
# loaded it (MANY: more than one)
_launch: dict[str, object] = {"name": None, "lo": np.zeros(0, np.uint64), "hi": np.zeros(0, np.uint64),
                              "writers": [], "readers": [], "stamps": [], "clock": 1, "released": {},
                              "barriers": {}, "acquired": {}, "pending": {}}
# Synchronisation (see the docstring): "stamps" holds per word the clock of its last store, "clock"
# counts stores and atomics, "released" maps an address to {program: clock} of the releases on it
# (the clock of the releasing program's last barrier), "barriers" each program's clock at its last
# barrier, "pending" each program's {program: clock} of the releases it has acquired since its last
# barrier, "acquired" those it had acquired before it.
WORD = 2  # the narrowest element a kernel stores (bf16, fp16); np.zeros pages in only what is touched
MANY = -1


def _extent(t: torch.Tensor) -> tuple[int, int] | None:
    """Bytes [lo, hi) that a view can address through its sizes and strides."""
    if t.numel() == 0:
        return None
    low = sum((s - 1) * st for s, st in zip(t.shape, t.stride()) if st < 0)
    high = sum((s - 1) * st for s, st in zip(t.shape, t.stride()) if st > 0)
    size = t.element_size()
    return t.data_ptr() + low * size, t.data_ptr() + (high + 1) * size


def _set_launch(name: str, args) -> None:
    spans = []
    for arg in args:
        arg = getattr(arg, "base", arg)  # a tensor descriptor's tensor
        if isinstance(arg, torch.Tensor):
            span = _extent(arg)
            if span is not None:
                spans.append(span)
    spans.sort()
    merged: list[list[int]] = []
    for lo, hi in spans:  # views of one storage overlap
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    _launch["name"] = name
    _launch["lo"] = np.array([m[0] for m in merged], dtype=np.uint64)
    _launch["hi"] = np.array([m[1] for m in merged], dtype=np.uint64)
    for table, dtype in (("writers", np.int32), ("readers", np.int32), ("stamps", np.int64)):
        _launch[table] = [np.zeros((hi - lo + WORD - 1) // WORD, dtype=dtype) for lo, hi in merged]
    _launch.update(clock=1, released={}, barriers={}, acquired={}, pending={})


def _synchronised(writers: np.ndarray, stamps: np.ndarray, program: int) -> np.ndarray:
    """Which words stored by ``writers`` (at clocks ``stamps``) ``program`` may load: its own after
    a barrier, another program's before a release it has acquired."""
    allowed = writers == 0
    own = writers == program
    allowed |= own & (stamps < _launch["barriers"].get(program, 0))
    for other, clock in _launch["acquired"].get(program, {}).items():
        allowed |= (writers == other) & (stamps < clock)
    return allowed


def _active(ptrs, mask) -> np.ndarray:
    """The addresses an access reaches: its pointers where its mask (None: every one) is on, flat."""
    if mask is None:
        return np.ravel(ptrs.data)
    addresses = np.broadcast_to(ptrs.data, np.broadcast_shapes(ptrs.data.shape, mask.data.shape))
    return addresses[np.broadcast_to(mask.data, addresses.shape)].ravel()


def _atomic(ptrs, mask, sem: str, program: int) -> None:
    """Record an atomic's acquire (the releases it reads) and release (on each active address)."""
    active = [int(a) for a in _active(ptrs, mask)]
    if sem in ("ACQUIRE", "ACQUIRE_RELEASE"):
        pending = _launch["pending"].setdefault(program, {})
        for address in active:
            for other, clock in _launch["released"].get(address, {}).items():
                if other != program:
                    pending[other] = max(pending.get(other, 0), clock)
    if sem in ("RELEASE", "ACQUIRE_RELEASE"):
        for address in active:
            _launch["released"].setdefault(address, {})[program] = _launch["barriers"].get(program, 0)
    _launch["clock"] += 1


def _barrier(program: int) -> None:
    """A program's barrier: its stores so far, and the releases it has acquired, reach all its threads."""
    _launch["barriers"][program] = _launch["clock"]
    acquired = _launch["acquired"].setdefault(program, {})
    for other, clock in _launch["pending"].pop(program, {}).items():
        acquired[other] = max(acquired.get(other, 0), clock)
    _launch["clock"] += 1


def _check(kind: str, ptrs, mask, program: int) -> None:
    size = ptrs.get_element_ty().primitive_bitwidth // 8
    active = _active(ptrs, mask).astype(np.uint64)
    if active.size == 0:
        return
    lo, hi = _launch["lo"], _launch["hi"]
    where = np.searchsorted(lo, active, side="right") - 1
    inside = (where >= 0) & (active + np.uint64(size) <= hi[np.maximum(where, 0)])
    aligned = active % np.uint64(size) == 0
    bad = ~(inside & aligned)
    if bad.any():
        first = int(active[bad][0])
        what = "outside every tensor argument" if not inside[bad][0] else f"not aligned to {size} bytes"
        raise SanitizerError(
            f"{_launch['name']}: {int(bad.sum())} of {active.size} active {kind}s are out of bounds or "
            f"misaligned; the first, at {first:#x}, is {what}"
        )
    now = _launch["clock"]
    _launch["clock"] += 1
    extents = [where[0]] if where[0] == where[-1] and (where == where[0]).all() else np.unique(where)
    for extent in extents:
        here = active if len(extents) == 1 else active[where == extent]
        first = (here - lo[extent]) // np.uint64(WORD)  # every word of each element
        words = first[:, None] + np.arange(max(1, size // WORD), dtype=np.uint64)  # [element, word]
        writers, readers, stamps = (_launch[table][extent] for table in ("writers", "readers", "stamps"))
        if kind == "load":
            clashes = [(writers[words], ~_synchronised(writers[words], stamps[words], program), "stored")]
        else:
            clashes = [(table[words], (table[words] != 0) & (table[words] != program), verb)
                       for table, verb in ((writers, "stored"), (readers, "loaded"))]
        for seen, clash, verb in clashes:
            if clash.any():
                other = int(seen[clash][0]) - 1
                relation = {program - 1: "itself", MANY - 1: "several programs"}.get(other, f"program {other}")
                raise SanitizerError(
                    f"{_launch['name']}: program {program - 1} {kind}s {int(clash.any(axis=1).sum())} elements that {relation} "
                    f"{verb} in the same launch (a race on a GPU)"
                )
        if kind == "store":
            writers[words] = program
            stamps[words] = now
        else:
            seen = readers[words]
            readers[words] = np.where((seen == 0) | (seen == program), program, MANY)


def _check_hint(values, divisibility) -> None:
    """A ``tl.multiple_of`` hint (one divisor, or one per dimension) must hold for every value."""
    divisor = max(int(d) for d in (divisibility if isinstance(divisibility, (list, tuple)) else [divisibility]))
    data = np.asarray(values)
    false = data % divisor != 0
    if divisor > 1 and false.any():
        raise SanitizerError(f"{_launch['name']}: a multiple_of({divisor}) hint is false for {int(false.sum())} of "
                             f"{data.size} values (e.g. {data[false].ravel()[:4].tolist()})")


def _garbage(dtype: np.dtype, shape) -> np.ndarray:
    """What a GPU's masked-off lanes might hold: NaN, or a large integer."""
    if np.issubdtype(dtype, np.floating):
        return np.full(shape, np.nan, dtype=dtype)
    if dtype == np.bool_:
        return np.ones(shape, dtype=dtype)
    return np.full(shape, np.iinfo(dtype).max // 3, dtype=dtype)


def _nan_filled(allocate):
    @functools.wraps(allocate)
    def wrapper(*args, **kwargs):
        t = allocate(*args, **kwargs)
        if t.is_floating_point() or t.is_complex():
            with torch.no_grad():
                t.fill_(float("nan"))
        return t

    return wrapper


def install() -> None:
    """Patch the interpreter and torch's uninitialised allocators for this process (never undone)."""
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    executor = interpreter.GridExecutor
    handle = interpreter.TensorHandle
    for owner, name in ((builder, "create_masked_load"), (builder, "create_masked_store"),
                        (builder, "set_grid_idx"), (executor, "_init_args_hst"), (handle, "set_attr"),
                        (builder, "create_atomic_rmw"), (builder, "create_atomic_cas"), (builder, "create_barrier")):
        if not callable(getattr(owner, name, None)):
            raise RuntimeError(f"Triton's interpreter has no {owner.__name__}.{name}: update tests/interpreter_sanitizer.py")
    if getattr(builder, "_allpole_sanitized", False):
        return
    builder._allpole_sanitized = True

    init_args, masked_load = executor._init_args_hst, builder.create_masked_load
    masked_store, set_grid_idx = builder.create_masked_store, builder.set_grid_idx
    set_attr = handle.set_attr
    atomic_rmw, atomic_cas, barrier = builder.create_atomic_rmw, builder.create_atomic_cas, builder.create_barrier

    def init_args_hst(self, args_dev, kwargs):
        args_hst, kwargs_hst = init_args(self, args_dev, kwargs)
        _set_launch(getattr(self.fn, "__name__", "kernel"), [*args_hst, *kwargs_hst.values()])
        return args_hst, kwargs_hst

    def program(self) -> int:
        (x, y, z), (nx, ny, _) = self.grid_idx, self.grid_dim
        return 1 + x + nx * (y + ny * z)

    def create_masked_load(self, ptrs, mask, other, cache_policy, is_volatile):
        _check("load", ptrs, mask, program(self))
        if other is None and ptrs.data.size > 1 and not mask.data.all():  # a block load without other (docstring)
            dtype_tt = ptrs.get_element_ty()
            other = interpreter.TensorHandle(_garbage(interpreter._get_np_dtype(dtype_tt), ptrs.data.shape), dtype_tt)
        return masked_load(self, ptrs, mask, other, cache_policy, is_volatile)

    def create_masked_store(self, ptrs, value, mask, cache_policy):
        _check("store", ptrs, mask, program(self))
        return masked_store(self, ptrs, value, mask, cache_policy)

    def create_atomic_rmw(self, rmw_op, ptr, val, mask, sem, scope):
        _atomic(ptr, mask, sem.name, program(self))
        return atomic_rmw(self, rmw_op, ptr, val, mask, sem, scope)

    def create_atomic_cas(self, ptr, cmp, val, sem, scope):
        _atomic(ptr, None, sem.name, program(self))
        return atomic_cas(self, ptr, cmp, val, sem, scope)

    def create_barrier(self):
        _barrier(program(self))
        return barrier(self)

    def reversed_grid_idx(self, x, y, z):
        nx, ny, nz = self.grid_dim
        return set_grid_idx(self, nx - 1 - x, ny - 1 - y, nz - 1 - z)

    def checked_set_attr(self, key, value):
        if key == "tt.divisibility":
            _check_hint(self.data, value)
        return set_attr(self, key, value)

    executor._init_args_hst = init_args_hst
    handle.set_attr = checked_set_attr
    builder.create_masked_load = create_masked_load
    builder.create_masked_store = create_masked_store
    builder.set_grid_idx = reversed_grid_idx
    builder.create_atomic_rmw = create_atomic_rmw
    builder.create_atomic_cas = create_atomic_cas
    builder.create_barrier = create_barrier

    torch.empty = _nan_filled(torch.empty)
    torch.empty_like = _nan_filled(torch.empty_like)
    torch.Tensor.new_empty = _nan_filled(torch.Tensor.new_empty)
    torch.empty_strided = _nan_filled(torch.empty_strided)
    torch.Tensor.new_empty_strided = _nan_filled(torch.Tensor.new_empty_strided)
