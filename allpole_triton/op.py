"""The filter as ``torch.library`` ops, and the autograd rule that ties them together.

All ops work on flattened rows: ``x (B, T)`` and ``zi (B, M)`` contiguous, ``a (Ba, Ta, M)`` with
``Ba in {1, B}``, ``Ta in {1, T}`` and any strides (the kernels read it where it lies).

- ``allpole_triton::allpole(x, a, zi, backend) -> y`` and
  ``allpole_triton::allpole_backward(grad_y, a, y, zi, backend, need_grad_a) -> (grad_x, grad_zi, grad_a)``:
  custom ops for CPU tensors (Numba, or Triton's interpreter).
- ``allpole_triton::allpole_cuda`` / ``allpole_triton::allpole_backward_cuda``: the same on CUDA
  tensors as ``torch.library.triton_op`` s, so that Inductor sees the Triton launches (and
  ``torch.compile(mode="reduce-overhead")`` can capture them in a CUDA graph).

The ops are what traces, functorch transforms, dispatch modes and the profiler see. In plain eager
the kernels are called directly on every device (:func:`_plain_eager`): the ops' layers cost host
time, which on a GPU is most of a short pass.

The backward is the adjoint filter run backwards in time with the shifted coefficients gathered
in the kernel, grad_a fused into the same pass.

:class:`AllPoleFunction` uses the fused backward op for first-order gradients. When the backward
itself is being differentiated (``create_graph=True``) it instead expresses the adjoint as the
forward filter on time-reversed, shifted coefficients, so double backward is the filter op again.
"""
from __future__ import annotations

import math
import os
import threading
import weakref

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

try:  # private; only AllPoleFunctionWithJvp.apply's shortcut uses it, and does without it
    from torch._functorch.utils import unwrap_dead_wrappers
except ImportError:  # pragma: no cover - present from torch 2.1 to 2.13 at least
    unwrap_dead_wrappers = None

from .kernels import numba_cpu

BACKENDS = ("auto", "numba", "triton", "naive")


def triton_interpret() -> bool:
    """Whether Triton kernels run on CPU tensors through Triton's interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map ``"auto"`` to a concrete backend and check that the backend can run on ``device``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return {"cuda": "triton", "cpu": "numba"}.get(device.type, "naive")
    if backend == "numba" and device.type != "cpu":
        raise ValueError(f"backend='numba' runs on CPU tensors only; got tensors on {device}")
    if backend == "triton" and not (device.type == "cuda" or (device.type == "cpu" and triton_interpret())):
        raise ValueError(
            f"backend='triton' needs CUDA tensors, or CPU tensors with TRITON_INTERPRET=1; got tensors on {device}"
        )
    return backend


def _triton():
    from .kernels import triton_scan  # imported lazily: Triton is optional on CPU-only machines

    return triton_scan


class HostBufferPool:
    """Pages of large CPU output buffers, reused once the tensors built on them are freed.

    A fresh multi-MB buffer costs a page fault per 4 KiB on first touch: for the (8, 65536, 16)
    float32 grad_a that was 12 ns/sample, more than the backward kernel itself (8 ns). Like
    PyTorch's CUDA caching allocator, this keeps released buffers (keyed by size) and hands them
    out again, already faulted in; outputs are still new tensors. A buffer is free again when the
    numpy view a tensor was made from has died (weakly referenced). Buffers below ``min_bytes``
    come from the allocator as usual; at most ``max_bytes`` are kept (``ALLPOLE_HOST_POOL_MB``,
    default 512; 0 turns the pool off): past that, free buffers go least recently used first.
    ``allpole_triton.op.host_pool.clear()`` releases every free buffer.
    """

    def __init__(self, max_bytes: int, min_bytes: int = 1 << 20) -> None:
        self.max_bytes, self.min_bytes = max_bytes, min_bytes
        self._buffers: dict[int, list[list]] = {}  # nbytes -> [[uint8 buffer, weakref to its view, last lent]]
        self._held = 0
        self._clock = 0  # lends so far: the recency of a buffer
        self._lock = threading.Lock()  # a free buffer must go to one caller only

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
        """An uninitialised array whose pages are already faulted in, or None (pool not used)."""
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.min_bytes:
            return None
        with self._lock:
            return self._take(nbytes, shape, dtype)

    def _take(self, nbytes: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
        entries = self._buffers.setdefault(nbytes, [])
        for entry in entries:
            if entry[1]() is None:
                return self._lend(entry, shape, dtype)
        if self._held + nbytes > self.max_bytes:
            self._evict_free(self._held + nbytes - self.max_bytes)
            if self._held + nbytes > self.max_bytes:
                return None
        # 64-byte aligned (numpy's large allocations are 16-aligned): the Numba backward writes
        # grad_a with aligned non-temporal vector stores where it can (numba_cpu.streams_grad_a)
        raw = np.empty(nbytes + 64, dtype=np.uint8)
        start = -raw.ctypes.data % 64
        buffer = raw[start:start + nbytes]
        buffer.fill(0)  # fault the pages in once, from this thread (see _empty)
        self._held += nbytes
        entry = [buffer, None, 0]
        entries.append(entry)
        return self._lend(entry, shape, dtype)

    def _lend(self, entry: list, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        view = entry[0].view(dtype).reshape(shape)
        entry[1] = weakref.ref(view)
        self._clock += 1
        entry[2] = self._clock
        return view

    def _evict_free(self, nbytes: int) -> None:
        """Drop free buffers, least recently lent first, until ``nbytes`` are released (or none is free)."""
        free = sorted(
            ((entry[2], size, entry) for size, entries in self._buffers.items() for entry in entries if entry[1]() is None),
            key=lambda item: item[0],
        )
        for _, size, entry in free:
            if nbytes <= 0:
                break
            self._buffers[size].remove(entry)
            self._held -= size
            nbytes -= size

    def clear(self) -> None:
        """Release every buffer no tensor uses any more."""
        with self._lock:
            self._evict_free(self._held)

    @property
    def held_bytes(self) -> int:
        return self._held


def _pool_limit() -> int:
    text = os.environ.get("ALLPOLE_HOST_POOL_MB", "512")
    try:
        megabytes = float(text)
    except ValueError:
        raise ValueError(f"ALLPOLE_HOST_POOL_MB must be a number of MiB (0 turns the pool off), got {text!r}") from None
    return int(max(megabytes, 0.0) * (1 << 20))


host_pool = HostBufferPool(_pool_limit())


# the dtypes the Numba kernels take, and their numpy twins
NUMBA_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)
_NUMPY_DTYPES = {t: torch.empty(0, dtype=t).numpy().dtype for t in NUMBA_DTYPES}


def _empty(shape: tuple[int, ...], like: Tensor, backend: str) -> Tensor:
    """Output buffer for a backend.

    Numba outputs are numpy-allocated (numpy asks for transparent huge pages on large buffers)
    and touched once from the calling thread: on our 2-core VMs, first-touch page faults taken
    inside Numba's worker threads made a fresh (8, 65536, 16) grad_a cost 10-70 ns/sample, against
    ~3 ns/sample for this fill. Large buffers come from :class:`HostBufferPool`, faulted in already.
    The kernels write every element of their outputs, so no zeros are needed.
    """
    if backend == "numba":
        return torch.from_numpy(host_empty(shape, _NUMPY_DTYPES[like.dtype]))
    return like.new_empty(shape)


def host_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A Numba output buffer, faulted in by the calling thread (see :func:`_empty`)."""
    buffer = host_pool.empty(shape, dtype)
    if buffer is None:
        buffer = np.empty(shape, dtype=dtype)
        buffer.fill(0)
    return buffer


def _triton_forward(x: Tensor, a: Tensor, zi: Tensor, launch=None) -> Tensor:
    # the kernels address x and zi as dense rows (a goes by its strides); free when already dense
    x, zi = x.contiguous(), zi.contiguous()
    y = torch.empty_like(x)
    if y.numel():
        _triton().allpole_forward(x, a, zi, y, launch=launch)
    return y


def _triton_backward(grad_y: Tensor, a: Tensor, y: Tensor, zi: Tensor, need_grad_a: bool, launch=None):
    grad_y, y, zi = grad_y.contiguous(), y.contiguous(), zi.contiguous()
    grad_x = torch.empty_like(grad_y)
    grad_zi = torch.empty_like(zi)
    grad_a = grad_y.new_empty(_grad_a_shape(grad_y, a, need_grad_a))
    if grad_y.numel() == 0:
        return grad_x, grad_zi.zero_(), grad_a.zero_()
    _triton().allpole_backward(grad_y, a, y, zi, grad_x, grad_zi, grad_a, need_grad_a, launch=launch)
    return grad_x, grad_zi, grad_a


_cuda_ops_registered = False


def register_cuda_ops() -> None:
    """Define ``allpole_triton::allpole_cuda`` / ``allpole_backward_cuda`` and
    ``dense_recurrence_cuda`` (linear_recurrence's dense scan) (idempotent).

    Defining a ``triton_op`` imports Inductor (0.8 s), which a process with no GPU never needs:
    they are registered at import where CUDA is available (so ``torch.compile`` finds them before
    it traces) and otherwise on first use with CUDA tensors (fake ones included).
    """
    global _cuda_ops_registered
    if _cuda_ops_registered:
        return

    @torch.library.triton_op("allpole_triton::allpole_cuda", mutates_args=())
    def allpole_cuda(x: Tensor, a: Tensor, zi: Tensor) -> Tensor:
        return _triton_forward(x, a, zi, launch=torch.library.wrap_triton)

    @torch.library.triton_op("allpole_triton::allpole_backward_cuda", mutates_args=())
    def allpole_backward_cuda(
        grad_y: Tensor, a: Tensor, y: Tensor, zi: Tensor, need_grad_a: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        return _triton_backward(grad_y, a, y, zi, need_grad_a, launch=torch.library.wrap_triton)

    @torch.library.triton_op("allpole_triton::dense_recurrence_cuda", mutates_args=())
    def dense_recurrence_cuda(A: Tensor, u: Tensor, h0: Tensor) -> Tensor:
        from .kernels import triton_recurrence

        h = torch.empty_like(u)
        triton_recurrence.dense_forward(A, u, h0, h, launch=torch.library.wrap_triton)
        return h

    _cuda_ops_registered = True


if torch.cuda.is_available():
    register_cuda_ops()


def _allpole_impl(x: Tensor, a: Tensor, zi: Tensor, backend: str) -> Tensor:
    if backend == "triton":
        return _triton_forward(x, a, zi)
    if backend != "numba":
        raise ValueError(f"allpole op: unknown backend {backend!r}")
    y = _empty(x.shape, x, backend)
    if y.numel():
        numba_cpu.allpole_forward(x.numpy(), a.numpy(), zi.numpy(), y.numpy())
    return y


@torch.library.custom_op("allpole_triton::allpole", mutates_args=())
def allpole_op(x: Tensor, a: Tensor, zi: Tensor, backend: str) -> Tensor:
    return _allpole_impl(x, a, zi, backend)


@allpole_op.register_fake
def _(x, a, zi, backend):
    return torch.empty_like(x)


def _allpole_backward_impl(
    grad_y: Tensor, a: Tensor, y: Tensor, zi: Tensor, backend: str, need_grad_a: bool
) -> tuple[Tensor, Tensor, Tensor]:
    if backend == "triton":
        return _triton_backward(grad_y, a, y, zi, need_grad_a)
    if backend != "numba":
        raise ValueError(f"allpole_backward op: unknown backend {backend!r}")
    grad_x = _empty(grad_y.shape, grad_y, backend)
    grad_zi = _empty(zi.shape, zi, backend)
    grad_a = _empty(_grad_a_shape(grad_y, a, need_grad_a), grad_y, backend)
    if grad_y.numel() == 0:
        return grad_x, grad_zi.zero_(), grad_a.zero_()
    numba_cpu.allpole_backward(
        grad_y.numpy(), a.numpy(), y.numpy(), zi.numpy(),
        grad_x.numpy(), grad_zi.numpy(), grad_a.numpy(), need_grad_a,
    )
    return grad_x, grad_zi, grad_a


@torch.library.custom_op("allpole_triton::allpole_backward", mutates_args=())
def allpole_backward_op(
    grad_y: Tensor, a: Tensor, y: Tensor, zi: Tensor, backend: str, need_grad_a: bool
) -> tuple[Tensor, Tensor, Tensor]:
    return _allpole_backward_impl(grad_y, a, y, zi, backend, need_grad_a)


def _grad_a_shape(grad_y: Tensor, a: Tensor, need_grad_a: bool) -> tuple[int, ...]:
    """grad_a is per row (B, Ta, M); broadcast rows are summed by the caller. When it is not
    needed it is (B, 0, M): still 3-d, because Numba types the kernel's grad_a branch even when
    ``need_grad_a`` is False."""
    return (grad_y.shape[0], a.shape[1] if need_grad_a else 0, a.shape[2])


@allpole_backward_op.register_fake
def _(grad_y, a, y, zi, backend, need_grad_a):
    return (
        torch.empty_like(grad_y),
        torch.empty_like(zi),
        grad_y.new_empty(_grad_a_shape(grad_y, a, need_grad_a)),
    )


# vmap: fold the vmapped dim into the row dim. a keeps a single shared row when it is unbatched
# and shared; otherwise it is expanded to one row per (vmap index, row).
def _fold_rows(batch: int, t: Tensor, bdim: int | None, rows: int) -> Tensor:
    t = t.unsqueeze(0).expand(batch, *t.shape) if bdim is None else t.movedim(bdim, 0)
    return t.expand(batch, rows, *t.shape[2:]).reshape(batch * rows, *t.shape[2:])


def _fold_coefficients(batch: int, a: Tensor, bdim: int | None, rows: int) -> Tensor:
    if bdim is None and a.shape[0] == 1:
        return a
    return _fold_rows(batch, a, bdim, rows).contiguous()


def _allpole_vmap(info, in_dims, x, a, zi, backend):
    batch = info.batch_size
    x_dim, a_dim, zi_dim, _ = in_dims
    rows = (x if x_dim is None else x.movedim(x_dim, 0)[0]).shape[0]
    y = allpole_op(
        _fold_rows(batch, x, x_dim, rows).contiguous(),
        _fold_coefficients(batch, a, a_dim, rows),
        _fold_rows(batch, zi, zi_dim, rows).contiguous(),
        backend,
    )
    return y.reshape(batch, rows, -1), 0


def _allpole_backward_vmap(info, in_dims, grad_y, a, y, zi, backend, need_grad_a):
    batch = info.batch_size
    g_dim, a_dim, y_dim, zi_dim, _, _ = in_dims
    rows = (grad_y if g_dim is None else grad_y.movedim(g_dim, 0)[0]).shape[0]
    grad_x, grad_zi, grad_a = allpole_backward_op(
        _fold_rows(batch, grad_y, g_dim, rows).contiguous(),
        _fold_coefficients(batch, a, a_dim, rows),
        _fold_rows(batch, y, y_dim, rows).contiguous(),
        _fold_rows(batch, zi, zi_dim, rows).contiguous(),
        backend,
        need_grad_a,
    )
    unfold = lambda t: t.reshape(batch, rows, *t.shape[1:])
    return (unfold(grad_x), unfold(grad_zi), unfold(grad_a)), (0, 0, 0)


torch.library.register_vmap("allpole_triton::allpole", _allpole_vmap)
torch.library.register_vmap("allpole_triton::allpole_backward", _allpole_backward_vmap)


def past_outputs(y: Tensor, zi: Tensor) -> Tensor:
    """``(B, T, M)`` windows with ``[:, n, i-1] = y[n-i]`` (from zi when n < i). Differentiable."""
    M = zi.shape[-1]
    history = torch.cat([zi.flip(-1), y[:, :-1]], dim=-1)  # history[k] = y[k - M]
    return history.unfold(-1, M, 1).flip(-1)


def _reduce_rows(grad_a: Tensor, a: Tensor) -> Tensor:
    """Sum per-row (and, for constant coefficients, per-sample) grad_a down to a's shape."""
    return grad_a.sum_to_size(a.shape)


def _adjoint_as_filter(grad_y: Tensor, a: Tensor, y: Tensor, zi: Tensor, backend: str):
    """The adjoint written as the (differentiable) forward filter in reversed time.

    Used only when the backward is itself differentiated; it materialises the shifted,
    reversed coefficients, which the fused backward kernel never does.
    """
    B, T = grad_y.shape
    M = a.shape[-1]
    a_full = a.expand(a.shape[0], T, M)
    # reversed time m = T-1-n over n = T-1 .. -M; tap i reads conj(a[n+i, i-1]), zero outside [0, T)
    shifted = torch.stack(
        [F.pad(a_full[:, :, i - 1].flip(-1).conj(), (i, M - i)) for i in range(1, M + 1)], dim=-1
    )
    padded_grad = F.pad(grad_y.flip(-1), (0, M))
    lam = AllPoleFunction.apply(padded_grad, shifted, grad_y.new_zeros(B, M), backend)
    grad_x = lam[:, :T].flip(-1)
    grad_zi = lam[:, T:]
    grad_a = -grad_x.unsqueeze(-1) * past_outputs(y, zi).conj()
    return grad_x, grad_zi, grad_a


def readable_tensors(
    *tensors: Tensor,
    types: tuple[type, ...] = (Tensor,),
    device: str | None = None,
    dtypes: tuple[torch.dtype, ...] | None = None,
) -> bool:
    """Whether the tensors' data can be read directly (numpy, Numba): tensors of exactly one of
    ``types``, outside a dynamo or jit trace and any functorch transform, and, where given, all on
    ``device`` with a dtype in ``dtypes``."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return all(
        type(t) in types and not torch._C._functorch.is_functorch_wrapped_tensor(t)
        and (device is None or t.device.type == device) and (dtypes is None or t.dtype in dtypes)
        for t in tensors
    )


def _plain_eager(*tensors: Tensor) -> bool:
    """Whether the kernels can be called directly, bypassing the ``torch.library`` ops: ordinary
    tensors, outside any trace (dynamo, jit), functorch transform, torch function / dispatch mode
    or profiler.

    The ops are what torch.compile, torch.jit.trace, vmap, fake tensors, dispatch modes and the
    profiler see (a jit trace of the direct call would record its output as a constant); in plain
    eager they only add dispatch cost per call, and their first call imports torch._dynamo (0.9 s).
    """
    if not readable_tensors(*tensors):  # first: inside a trace nothing below may be evaluated
        return False
    if torch._C._autograd._profiler_enabled() or torch._C._is_torch_function_mode_enabled():
        return False
    return torch.utils._python_dispatch._get_current_dispatch_mode() is None


def _wants_gradient(*tensors: Tensor) -> bool:
    """Whether autograd (reverse or forward mode) may need this call's derivative."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return True
    return getattr(torch.autograd.forward_ad, "_current_level", 0) >= 0  # inside a dual_level


def direct_numba(*tensors: Tensor) -> bool:
    """Whether a call may run the Numba kernels straight on numpy views of its tensors, with no
    torch op or autograd node around them: plain eager CPU tensors of one Numba dtype (mixed
    dtypes go the torch path, which raises or promotes as it always has), and no gradient wanted.
    For the short blocks of streaming inference the torch glue is most of a call (a 64-sample
    block: ~110 us through ``lfilter``'s autograd-aware path, ~1.5 us of kernel); the kernels are
    the same either way, so the outputs are the same bits."""
    return (
        _plain_eager(*tensors)
        and all(t.is_cpu and t.dtype == tensors[0].dtype for t in tensors)
        and tensors[0].dtype in NUMBA_DTYPES
        and not _wants_gradient(*tensors)
    )


def composition_gradients(compose, inputs, needs, grads, create_graph: bool) -> tuple:
    """Gradients for a Function whose backward differentiates a torch composition of the same
    function: ``compose(*inputs)`` gives the outputs (a tuple), ``grads`` their upstream gradients
    (None: unused), ``needs`` which inputs want one. With ``create_graph`` the saved inputs are used
    as they are, so the result stays connected to their graphs (a double backward). Returns one
    entry per input, None where not wanted or not reached."""
    inputs = [t if create_graph else t.detach() for t in inputs]
    inputs = [t if t.requires_grad else t.detach().requires_grad_(need) for t, need in zip(inputs, needs)]
    with torch.enable_grad():
        outputs = compose(*inputs)
    wanted = [t for t, need in zip(inputs, needs) if need]
    pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None and o.requires_grad]
    if not pairs or not wanted:
        return tuple(None for _ in inputs)
    found = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                     allow_unused=True, create_graph=create_graph))
    return tuple(next(found) if need else None for need in needs)


def resolved(t: Tensor | None) -> Tensor | None:
    """``t`` with a lazy conjugation or negation (a ``conj()`` or ``neg`` view) applied: the kernels
    read memory as it is, and numpy refuses such views. A plain tensor is returned as it is."""
    if t is None:
        return t
    # under dynamo is_conj() would break the graph, while the resolves trace (no-ops without the bits)
    if torch.compiler.is_compiling() or t.is_conj() or t.is_neg():
        return t.resolve_conj().resolve_neg()
    return t


def numpy_rows(
    t: Tensor | None, lead: tuple[int, ...], rows: int, tail: tuple[int, ...], dtype: np.dtype | None = None
) -> np.ndarray:
    """``t`` broadcast to ``(*lead, *tail)`` as a C-contiguous ``(rows, *tail)`` numpy array: a view
    of ``t`` where it already is one, else a copy; ``None`` gives zeros of ``dtype`` (a state at
    rest). For :func:`direct_numba` calls only."""
    if t is None:
        return np.zeros((rows, *tail), dtype)
    array = (t.detach() if t.requires_grad else t).numpy()
    if array.shape != (*lead, *tail):  # broadcast_to costs more than the rest: only when needed
        array = np.broadcast_to(array, (*lead, *tail))
    return np.ascontiguousarray(array.reshape(rows, *tail))


def from_rows(array: np.ndarray, lead: tuple[int, ...]) -> Tensor:
    """A ``(rows, *tail)`` result of a direct Numba call as a ``(*lead, *tail)`` tensor on its memory.
    Pass the array :func:`host_empty` lent itself, never a slice of it: the pool takes a buffer back
    once that array is gone, and a slice would keep only the pool's own buffer alive."""
    return torch.from_numpy(array).view(*lead, *array.shape[1:])


def _forward_op(x: Tensor, a: Tensor, zi: Tensor, backend: str) -> Tensor:
    # plain eager calls the kernels directly on every device: the ops' layers (dispatch, the
    # aliasing check, the triton_op's wrappers) cost more host time than a short pass's kernels
    if _plain_eager(x, a, zi):
        return _allpole_impl(x, a, zi, backend)
    if backend == "triton" and x.is_cuda:
        register_cuda_ops()
        return torch.ops.allpole_triton.allpole_cuda(x, a, zi)
    return allpole_op(x, a, zi, backend)


def _backward_op(grad_y: Tensor, a: Tensor, y: Tensor, zi: Tensor, backend: str, need_grad_a: bool):
    if _plain_eager(grad_y, a, y, zi):
        return _allpole_backward_impl(grad_y, a, y, zi, backend, need_grad_a)
    if backend == "triton" and grad_y.is_cuda:
        register_cuda_ops()
        return torch.ops.allpole_triton.allpole_backward_cuda(grad_y, a, y, zi, need_grad_a)
    return allpole_backward_op(grad_y, a, y, zi, backend, need_grad_a)


class AllPoleFunction(torch.autograd.Function):
    """Differentiable all-pole filter over flattened rows; see the module docstring."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, a: Tensor, zi: Tensor, backend: str) -> Tensor:
        return _forward_op(x, a, zi, backend)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, a, zi, backend = inputs
        ctx.save_for_backward(a, zi, output)
        ctx.save_for_forward(a, zi, output)
        ctx.backend = backend

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        a, zi, y = ctx.saved_tensors
        need_x, need_a, need_zi, _ = ctx.needs_input_grad
        if torch.is_grad_enabled():
            grad_x, grad_zi, grad_a = _adjoint_as_filter(grad_y, a, y, zi, ctx.backend)
        else:
            grad_x, grad_zi, grad_a = _backward_op(grad_y.contiguous(), a, y, zi, ctx.backend, need_a)
        return (
            grad_x if need_x else None,
            _reduce_rows(grad_a, a) if need_a else None,
            grad_zi if need_zi else None,
            None,
        )


class AllPoleFunctionWithJvp(AllPoleFunction):
    """Adds forward-mode AD. Dynamo cannot trace a custom ``jvp``, so compiled code uses the base."""

    @classmethod
    def apply(cls, *args, **kwargs):
        """``torch.autograd.Function.apply`` without its per-call ``inspect.signature`` bind, which
        took 35 of a call's 45 us here (forward's arguments are positional, with no defaults to
        apply). Under functorch transforms it is torch's own apply; the base class, which compiled
        code uses, keeps torch's apply so that Dynamo sees an ordinary Function."""
        if kwargs or unwrap_dead_wrappers is None or torch._C._are_functorch_transforms_active():
            return super().apply(*args, **kwargs)
        args = unwrap_dead_wrappers(args)  # as torch's apply does
        return super(torch.autograd.Function, cls).apply(*args)

    @staticmethod
    def jvp(ctx, x_dot, a_dot, zi_dot, _):
        a, zi, y = ctx.saved_tensors
        drive = torch.zeros_like(y) if x_dot is None else x_dot
        if a_dot is not None:
            drive = drive - (a_dot * past_outputs(y, zi)).sum(-1)
        return AllPoleFunctionWithJvp.apply(
            drive, a, torch.zeros_like(zi) if zi_dot is None else zi_dot, ctx.backend
        )


def filter_rows(x: Tensor, a: Tensor, zi: Tensor, backend: str) -> Tensor:
    """Run a concrete backend on flattened rows (shapes as in the module docstring; ``a`` is
    passed on with its strides)."""
    if backend == "naive":
        from .kernels.naive import allpole_naive

        return allpole_naive(x, a, zi)
    x, zi = x.contiguous(), zi.contiguous()
    if _plain_eager(x, a, zi) and not _wants_gradient(x, a, zi):
        # inference: no autograd.Function (its apply costs 20 us)
        return _allpole_impl(x, a, zi, backend)
    fn = AllPoleFunction if torch.compiler.is_compiling() else AllPoleFunctionWithJvp
    return fn.apply(x, a, zi, backend)
