"""General linear recurrences: ``h[n] = A[n] @ h[n-1] + u[n]`` with dense or diagonal transitions.

:func:`linear_recurrence` is the state-space workhorse (philtorch's ``state_space`` recursion):
time-varying ``A (..., T or 1, M, M)``, inputs ``u (..., T, M)``, initial state ``h0 (..., M)``,
real or complex. Exact and differentiable in A, u and h0 to any order: the adjoint
``lam[n] = A[n+1]^H lam[n+1] + g[n]`` runs as the same recurrence in reversed time, and
``grad A[n] = lam[n] h[n-1]^H``, ``grad u = lam``, ``grad h0 = A[0]^H lam[0]``.

- ``diagonal=True``: ``A (..., T or 1, M)`` acts elementwise, M independent first-order
  recursions; they run as :func:`allpole_triton.allpole` of order 1 (the Triton scan on CUDA,
  Numba on CPU, with everything allpole supports).
- dense: a Triton chunked scan on CUDA tensors (``allpole_triton.kernels.triton_recurrence``;
  complex recurrences run as real ones of twice the order, up to a real order of 16), Numba
  kernels on CPU tensors, and elsewhere (above that order on CUDA, under vmap, torch.compile and
  tracing) the same chunked scan in torch ops (:func:`blocked_recurrence`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ._shapes import broadcast_leading
from .functional import allpole, coefficient_rows
from .op import NUMBA_DTYPES, _empty, composition_gradients, readable_tensors, register_cuda_ops, resolve_backend, resolved


def linear_recurrence(
    A: Tensor, u: Tensor, h0: Tensor | None = None, *, diagonal: bool = False, return_final: bool = False,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """``h[n] = A[n] @ h[n-1] + u[n]`` for n = 0..T-1 with ``h[-1] = h0`` (zeros when ``None``).

    Args:
        A: transitions ``(..., T or 1, M, M)``, or ``(..., T or 1, M)`` with ``diagonal=True``.
        u: inputs ``(..., T, M)``.
        h0: initial state ``(..., M)``.
        diagonal: A holds the diagonals of diagonal transitions.
        return_final: also return ``h[T-1]`` (the next block's ``h0``).
        backend: ``"auto"`` (Triton for CUDA tensors, Numba for CPU), ``"triton"`` (CUDA, or CPU
            under ``TRITON_INTERPRET=1``), ``"numba"`` (CPU) or ``"naive"`` (a torch loop).
    Returns:
        ``h (*lead, T, M)`` (and ``h[..., T-1, :]``); ``lead`` broadcasts the leading dims.
    """
    for name, t in (("A", A), ("u", u)) + ((("h0", h0),) if h0 is not None else ()):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if u.ndim < 2:
        raise ValueError(f"u must have shape (..., T, M), got shape {tuple(u.shape)}")
    T, M = u.shape[-2:]
    state_dims = 1 if diagonal else 2
    expected = "(..., T or 1, M)" if diagonal else "(..., T or 1, M, M)"
    if A.ndim < 1 + state_dims or A.shape[-state_dims:] != (M,) * state_dims or A.shape[-1 - state_dims] not in (1, T):
        raise ValueError(f"A must have shape {expected} with T={T}, M={M}, got shape {tuple(A.shape)}")
    if h0 is not None and (h0.ndim < 1 or h0.shape[-1] != M):
        raise ValueError(f"h0 must have shape (..., M) with M={M}, got shape {tuple(h0.shape)}")
    devices = {t.device for t in (A, u) + ((h0,) if h0 is not None else ())}
    if len(devices) > 1:
        raise ValueError(f"A, u and h0 must be on one device, got {sorted(map(str, devices))}")
    dtypes = {t.dtype for t in (A, u) + ((h0,) if h0 is not None else ())}
    if len(dtypes) > 1:
        raise TypeError(f"A, u and h0 must share one dtype, got {sorted(map(str, dtypes))}")
    lead = broadcast_leading(
        **{"A": A.shape[: A.ndim - 1 - state_dims], "u": u.shape[:-2]}, **({} if h0 is None else {"h0": h0.shape[:-1]})
    )
    A, u, h0 = resolved(A), resolved(u), resolved(h0)
    backend = resolve_backend(backend, u.device)
    h0 = u.new_zeros(*lead, M) if h0 is None else h0.expand(*lead, M)
    if diagonal:
        # M independent first-order recursions: allpole of order 1 with a = -A, over (..., M, T) rows
        h = allpole(u.movedim(-1, -2), (-A).movedim(-1, -2).unsqueeze(-1), h0.unsqueeze(-1), backend=backend)
        h = h.movedim(-1, -2)
    else:
        rows = math.prod(lead)
        h = _DenseRecurrence.apply(coefficient_rows(A, lead, tail=3), u.expand(*lead, T, M).reshape(rows, T, M),
                                   h0.reshape(rows, M), backend)
        h = h.reshape(*lead, T, M)
    if not return_final:
        return h
    return h, (h[..., -1, :] if T else h0)


def linear_recurrence_naive(A: Tensor, u: Tensor, h0: Tensor) -> Tensor:
    """The reference: a sequential torch loop over rows ``A (Ra, Ta, M, M)``, ``u (R, T, M)``, ``h0 (R, M)``."""
    out, h = [], h0
    for n in range(u.shape[1]):
        h = (A[:, n if A.shape[1] > 1 else 0] @ h.unsqueeze(-1)).squeeze(-1) + u[:, n]
        out.append(h)
    return torch.stack(out, dim=1) if out else u.new_zeros(u.shape)


def _triton_dense(A: Tensor, u: Tensor, h0: Tensor) -> Tensor:
    """The Triton scan on rows; a complex recurrence runs as the real one of twice the order on the
    state [Re h; Im h], with A as [[Re A, -Im A], [Im A, Re A]]."""
    from .kernels import triton_recurrence

    M = u.shape[-1]
    if u.is_complex():
        A = torch.cat([torch.cat([A.real, -A.imag], -1), torch.cat([A.imag, A.real], -1)], -2)
        u, h0 = (torch.cat([t.real, t.imag], -1) for t in (u, h0))
    u, h0 = u.contiguous(), h0.contiguous()
    if u.is_cuda:  # the custom op, which torch.compile traces
        register_cuda_ops()
        h = torch.ops.allpole_triton.dense_recurrence_cuda(A, u, h0)
    else:  # the interpreter on CPU tensors
        h = torch.empty_like(u)
        triton_recurrence.dense_forward(A, u, h0, h)
    return torch.complex(h[..., :M], h[..., M:]) if h.shape[-1] != M else h


def _uses_triton(u: Tensor, backend: str) -> bool:
    from .kernels.triton_recurrence import MAX_ORDER

    return backend == "triton" and u.shape[-1] * (2 if u.is_complex() else 1) <= MAX_ORDER


def blocked_recurrence(A: Tensor, u: Tensor, h0: Tensor, chunk: int | None = None) -> Tensor:
    """The chunked scan in torch ops, for any device, order and transform: rows ``A (Ra, Ta, M, M)``,
    ``u (R, T, M)``, ``h0 (R, M)``. Chunks of about sqrt(T) steps: every chunk's map [Phi | z] in
    float64 (batched matrix products, one per step of a chunk), a walk over the chunks for their
    incoming states, then all chunks finished at once in the input's precision. About 3 sqrt(T)
    sequential steps instead of T (a torch op each: launches on a GPU, trace length under compile)."""
    R, T, M = u.shape
    if T < 64 and chunk is None:  # a few steps: the loop is as short
        return linear_recurrence_naive(A, u, h0)
    chunk = chunk or math.isqrt(T)
    n = -(-T // chunk)
    pad = n * chunk - T
    wide = torch.complex128 if u.is_complex() else torch.float64
    A = A.expand(R, T if A.shape[1] > 1 else 1, M, M)
    if A.shape[1] > 1 and pad:  # padded steps: identity transitions, no input (outputs dropped)
        A = torch.cat([A, torch.eye(M, dtype=A.dtype, device=A.device).expand(R, pad, M, M)], dim=1)
    u = torch.cat([u, u.new_zeros(R, pad, M)], dim=1) if pad else u
    steps_A = A.reshape(R, n, chunk, M, M) if A.shape[1] > 1 else A.unsqueeze(1).expand(R, n, chunk, M, M)
    steps_u = u.reshape(R, n, chunk, M)
    phi = torch.eye(M, dtype=wide, device=u.device).expand(R, n, M, M)
    z = steps_u.new_zeros(R, n, M, dtype=wide)
    for t in range(chunk):
        step = steps_A[:, :, t].to(wide)
        phi = step @ phi
        z = (step @ z.unsqueeze(-1)).squeeze(-1) + steps_u[:, :, t].to(wide)
    state, starts = h0.to(wide), []
    for c in range(n):
        starts.append(state)
        state = (phi[:, c] @ state.unsqueeze(-1)).squeeze(-1) + z[:, c]
    h = torch.stack(starts, dim=1).to(u.dtype)
    out = []
    for t in range(chunk):
        h = (steps_A[:, :, t] @ h.unsqueeze(-1)).squeeze(-1) + steps_u[:, :, t]
        out.append(h)
    return torch.stack(out, dim=2).reshape(R, n * chunk, M)[:, :T]


class _DenseRecurrence(torch.autograd.Function):
    """Rows: A (Ra, Ta, M, M), u (R, T, M), h0 (R, M) -> h (R, T, M). The backward and the
    forward-mode derivative are written with this Function and torch ops, so they are
    differentiable again. Under vmap, and under torch.compile or jit tracing of CPU tensors, the
    kernels cannot read the tensors and the forward runs :func:`blocked_recurrence` (torch ops,
    which is what the generated vmap rule batches)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(A: Tensor, u: Tensor, h0: Tensor, backend: str) -> Tensor:
        # CUDA: the custom op, which traces (dynamo, fake tensors) but has no batching rule
        on_cuda = u.is_cuda and not any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in (A, u, h0))
        if u.numel() and _uses_triton(u, backend) and (on_cuda or readable_tensors(A, u, h0)):
            return _triton_dense(A, u, h0)
        if u.numel() and backend == "numba" and readable_tensors(A, u, h0, device="cpu", dtypes=NUMBA_DTYPES):
            from .kernels import numba_recurrence

            h = _empty(u.shape, u, "numba")  # pooled: no page faults in the kernel's threads
            numba_recurrence.dense_forward(A.contiguous().numpy(), u.contiguous().numpy(), h0.contiguous().numpy(), h.numpy())
            return h
        with torch.no_grad():
            if backend == "naive":
                return linear_recurrence_naive(A, u, h0)
            return blocked_recurrence(A, u, h0)  # CUDA above Triton's orders, traces and transforms

    @staticmethod
    def setup_context(ctx, inputs, output):
        A, _, h0, backend = inputs
        ctx.backend = backend
        ctx.save_for_backward(A, h0, output)
        ctx.save_for_forward(A, h0, output)

    @staticmethod
    def jvp(ctx, dA: Tensor | None, du: Tensor | None, dh0: Tensor | None, _) -> Tensor:
        """dh[n] = A[n] dh[n-1] + dA[n] h[n-1] + du[n] from dh[-1] = dh0: the same recurrence."""
        A, h0, h = ctx.saved_tensors
        drive = torch.zeros_like(h) if du is None else du.expand_as(h)
        if dA is not None:
            previous = torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1)
            drive = drive + (dA @ previous.unsqueeze(-1)).squeeze(-1)
        return _DenseRecurrence.apply(A, drive, torch.zeros_like(h0) if dh0 is None else dh0, ctx.backend)

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        A, h0, h = ctx.saved_tensors
        R, T, M = grad_h.shape
        if T == 0:
            return torch.zeros_like(A), torch.zeros_like(grad_h), torch.zeros_like(h0), None
        numba_adjoint = ctx.backend == "numba" and M > 0 and not torch.is_grad_enabled() and readable_tensors(
            A, h0, h, grad_h, device="cpu", dtypes=NUMBA_DTYPES)
        if numba_adjoint:  # one fused pass; with create_graph the torch ops below are differentiated
            from .kernels import numba_recurrence

            need_grad_A = ctx.needs_input_grad[0]
            # without grad_A the kernel neither reads nor writes it: a placeholder of the right rank
            grad_A = _empty((R, A.shape[1], M, M) if need_grad_A else (1, 1, M, M), h, "numba")
            grad_u, grad_h0 = _empty(h.shape, h, "numba"), torch.empty_like(h0)
            numba_recurrence.dense_adjoint(A.contiguous().numpy(), h0.contiguous().numpy(), h.numpy(),
                                           grad_h.contiguous().numpy(), grad_A.numpy(), grad_u.numpy(), grad_h0.numpy(),
                                           need_grad_A)
            if not need_grad_A:
                return None, grad_u, grad_h0, None
            return (grad_A.sum(0, keepdim=True) if A.shape[0] == 1 and R > 1 else grad_A), grad_u, grad_h0, None
        # lam[n] = A[n+1]^H lam[n+1] + g[n]: in reversed time m = T-1-n, mu[m] = A[T-m]^H mu[m-1] + g[T-1-m]
        # from mu[-1] = 0 (so the transition at m = 0 is never used: A[0] stands in for it)
        reversed_A = torch.cat([A[:, :1], A[:, 1:].flip(1)], dim=1) if A.shape[1] > 1 else A
        lam = _DenseRecurrence.apply(reversed_A.mH, grad_h.flip(1), torch.zeros_like(h0), ctx.backend).flip(1)
        grad_A = None
        if ctx.needs_input_grad[0]:
            previous = torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1)
            grad_A = lam.unsqueeze(-1) * previous.conj().unsqueeze(-2)  # (R, T, M, M): lam[n] h[n-1]^H
            if A.shape[1] == 1:
                grad_A = grad_A.sum(1, keepdim=True)
            if A.shape[0] == 1 and R > 1:
                grad_A = grad_A.sum(0, keepdim=True)
        grad_h0 = (A[:, 0].mH @ lam[:, 0].unsqueeze(-1)).squeeze(-1)  # (R, M): A's rows broadcast
        return grad_A, lam, grad_h0, None


def _mix(weights: Tensor, values: Tensor) -> Tensor:
    """sum over the last dim of weights * values (broadcast)."""
    return (weights * values).sum(-1)


def _input_term(B: Tensor | None, x: Tensor, batch: int, N: int, M: int) -> Tensor:
    """B_t x_t as (batch, N, M), by philtorch 0.6.0's shape rules, tried in its order."""
    F = x.shape[-1] if x.ndim == 3 else None
    scalar = x.ndim == 2
    if B is None:
        if x.ndim != 3 or F != M:
            raise ValueError(f"without B, x must have shape (batch, N, M={M}), got {tuple(x.shape)}")
        return x
    shape = tuple(B.shape)
    if shape == (M,) and scalar:
        return x.unsqueeze(-1) * B
    if shape == (M, F):
        return x @ B.mT
    if shape == (N, M) and scalar:
        return x.unsqueeze(-1) * B
    if shape == (batch, M) and scalar:
        return x.unsqueeze(-1) * B.unsqueeze(1)
    if shape == (N, M, F):
        return _mix(B, x.unsqueeze(-2))
    if shape == (batch, N, M) and scalar:
        return x.unsqueeze(-1) * B
    if shape == (batch, M, F):
        return _mix(B.unsqueeze(1), x.unsqueeze(-2))
    if shape == (batch, N, M, F):
        return _mix(B, x.unsqueeze(-2))
    raise ValueError(
        f"B must have shape (M,), (N, M), (batch, M), (batch, N, M) (x of shape (batch, N)) or (M, F), "
        f"(N, M, F), (batch, M, F), (batch, N, M, F) (x of shape (batch, N, F)) with batch={batch}, N={N}, "
        f"M={M}, F={F}; got {shape}"
    )


def _output_term(C: Tensor | None, h: Tensor, batch: int, N: int, M: int) -> Tensor:
    """C_t h_t from the states h (batch, N, M) before each step, by philtorch's rules and order."""
    if C is None:
        return h
    shape = tuple(C.shape)
    if shape == (M,):
        return h @ C
    if shape == (N, M):
        return _mix(C, h)
    if shape == (batch, M):
        return _mix(C.unsqueeze(1), h)
    if C.ndim == 2 and shape[1] == M:
        return h @ C.mT
    if C.ndim == 3 and shape[0] == N and shape[2] == M:
        return _mix(C, h.unsqueeze(-2))
    if shape == (batch, N, M):
        return _mix(C, h)
    if C.ndim == 3 and shape[0] == batch and shape[2] == M:
        return h @ C.mT
    if C.ndim == 4 and shape[:2] == (batch, N) and shape[3] == M:
        return _mix(C, h.unsqueeze(-2))
    raise ValueError(
        f"C must have shape (M,), (N, M), (batch, M), (P, M), (N, P, M), (batch, N, M), (batch, P, M) or "
        f"(batch, N, P, M) with batch={batch}, N={N}, M={M}; got {shape}"
    )


def _feedthrough(D: Tensor, x: Tensor, batch: int, N: int) -> Tensor:
    """D_t x_t by philtorch's rules and order (x (batch, N) or (batch, N, F))."""
    F = x.shape[-1] if x.ndim == 3 else None
    scalar = x.ndim == 2
    shape = tuple(D.shape)
    if shape == (F,):
        return x @ D
    if shape == (N,) and scalar:
        return D * x
    if shape == (batch,) and scalar:
        return D.unsqueeze(1) * x
    if shape in ((1,), ()):
        return x * D
    if D.ndim == 1 and scalar:
        return x.unsqueeze(-1) * D
    if shape == (N, F):
        return _mix(D, x)
    if shape == (batch, F):
        return _mix(D.unsqueeze(1), x)
    if D.ndim == 2 and shape[0] == N and scalar:
        return D * x.unsqueeze(-1)
    if shape == (batch, N) and scalar:
        return D * x
    if D.ndim == 2 and shape[0] == batch and scalar:
        return D.unsqueeze(1) * x.unsqueeze(-1)
    if D.ndim == 2 and shape[1] == F:
        return x @ D.mT
    if shape == (batch, N, F):
        return _mix(D, x)
    if D.ndim == 3 and shape[:2] == (batch, N) and scalar:
        return D * x.unsqueeze(-1)
    if D.ndim == 3 and shape[0] == N and shape[2] == F:
        return _mix(D, x.unsqueeze(-2))
    if D.ndim == 3 and shape[0] == batch and shape[2] == F:
        return x @ D.mT
    if D.ndim == 4 and shape[:2] == (batch, N) and shape[3] == F:
        return _mix(D, x.unsqueeze(-2))
    raise ValueError(f"D has no shape rule for x of shape {tuple(x.shape)}: got {shape} (see philtorch.lpv.state_space)")


def _single_input_single_output(
    B: Tensor | None, C: Tensor | None, x: Tensor, batch: int, N: int, M: int
) -> tuple[Tensor, Tensor] | None:
    """B and C as ``(1 or batch, 1 or N, M)`` rows when x is ``(batch, N)`` and both are vectors per
    (batch, time) by the rules of :func:`_input_term` and :func:`_output_term`, taken in their order
    (so an ambiguous shape means what it means there); None for every other form."""
    if x.ndim != 2 or B is None or C is None:
        return None

    def vector_rows(t: Tensor, per_batch_and_time: bool) -> Tensor | None:
        shape = tuple(t.shape)
        if shape == (M,):
            return t.view(1, 1, M)
        if shape == (N, M):
            return t.unsqueeze(0)
        if shape == (batch, M):
            return t.unsqueeze(1)
        return t if per_batch_and_time and shape == (batch, N, M) else None

    # C (batch, N, M) with batch == N is _output_term's (N, P, M) matrix form, which it tries first
    vectors = vector_rows(B, True), vector_rows(C, C.ndim == 3 and C.shape[0] != N)
    return None if any(v is None for v in vectors) else vectors


def _fused_applies(*tensors: Tensor, backend: str) -> bool:
    """The fused Numba state-space kernels take plain CPU tensors of one Numba dtype, a non-empty
    time axis and an order whose state fits in registers."""
    from .kernels.numba_recurrence import uses_registers

    x, A = tensors[0], tensors[1]
    return (
        resolve_backend(backend, x.device) == "numba" and x.shape[1] > 0 and A.shape[-1] > 0
        and len({t.dtype for t in tensors}) == 1
        and readable_tensors(*tensors, types=(Tensor, torch.nn.Parameter), device="cpu", dtypes=NUMBA_DTYPES)
        and uses_registers(A.shape[-1], x.is_complex())
    )


class _FusedStateSpace(torch.autograd.Function):
    """Rows: A (Ra, Ta, M, M), x (R, T), B (Rb, Tb, M), C (Rc, Tc, M), h0 (R, M) ->
    (y (R, T), h[T-1] (R, M)) with ``y[n] = C[n] . h[n-1]``, ``h[n] = A[n] h[n-1] + B[n] x[n]``, on
    the fused Numba kernels (``numba_recurrence.state_space_*``): no (R, T, M) tensors for B x and
    C h around the recurrence. A double backward differentiates the torch composition instead."""

    @staticmethod
    def forward(ctx, A: Tensor, x: Tensor, B: Tensor, C: Tensor, h0: Tensor):
        from .kernels import numba_recurrence

        R, T = x.shape
        h, y = _empty((R, T, A.shape[-1]), x, "numba"), _empty((R, T), x, "numba")
        numba_recurrence.state_space_forward(*(t.detach().numpy() for t in (A, x, B, C, h0)), h.numpy(), y.numpy())
        ctx.save_for_backward(A, x, B, C, h0, h)
        return y, h[:, -1].clone()

    @staticmethod
    def backward(ctx, grad_y: Tensor | None, grad_final: Tensor | None):
        A, x, B, C, h0, h = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph: gradients of the torch composition, differentiable again
            def compose(A, x, B, C, h0):
                states = linear_recurrence(A, x.unsqueeze(-1) * B, h0)
                return _mix(C, torch.cat([h0.unsqueeze(1), states[:, :-1]], dim=1)), states[:, -1]

            return composition_gradients(compose, (A, x, B, C, h0), needs, (grad_y, grad_final), True)
        from .kernels import numba_recurrence

        R, T, M = h.shape
        grad_y = x.new_zeros(R, T) if grad_y is None else grad_y.contiguous()
        grad_final = h0.new_zeros(R, M) if grad_final is None else grad_final.contiguous()
        # per-row coefficient gradients; a placeholder of the right rank where none is wanted
        per_row = lambda t, need: _empty((R, *t.shape[1:]) if need else (1,) * t.ndim, x, "numba")  # noqa: E731
        grad_A, grad_B, grad_C = per_row(A, needs[0]), per_row(B, needs[2]), per_row(C, needs[3])
        grad_x, grad_h0 = _empty((R, T), x, "numba"), torch.empty_like(h0)
        numba_recurrence.state_space_adjoint(
            *(t.numpy() for t in (A, x, B, C, h0, h, grad_y, grad_final, grad_A, grad_x, grad_B, grad_C, grad_h0)),
            (needs[0], needs[2], needs[3]),
        )
        rows = lambda grad, t: grad.sum(0, keepdim=True) if t.shape[0] == 1 and R > 1 else grad  # noqa: E731
        return (rows(grad_A, A) if needs[0] else None, grad_x, rows(grad_B, B) if needs[2] else None,
                rows(grad_C, C) if needs[3] else None, grad_h0)


def state_space(
    x: Tensor, A: Tensor, B: Tensor | None = None, C: Tensor | None = None, D: Tensor | None = None,
    zi: Tensor | None = None, *, backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """A discrete parameter-varying state-space model, with philtorch 0.6.0's ``lpv.state_space``
    equations and shapes (its arguments are ``(A, x, ...)``)::

        h[t+1] = A[t] h[t] + B[t] x[t],    y[t] = C[t] h[t] + D[t] x[t],    h[0] = zi

    The state recursion is :func:`linear_recurrence` (exact, differentiable, Triton on CUDA).

    Args:
        x: ``(batch, N)`` or ``(batch, N, F)``.
        A: ``(N, M, M)`` or ``(batch, N, M, M)``.
        B: None (then x is ``(batch, N, M)``), or for 2-d x ``(M,)``, ``(N, M)``, ``(batch, M)``,
            ``(batch, N, M)``; for 3-d x ``(M, F)``, ``(N, M, F)``, ``(batch, M, F)``, ``(batch, N, M, F)``.
        C: None (y is the state), ``(M,)``, ``(N, M)``, ``(batch, M)``, ``(P, M)``, ``(N, P, M)``,
            ``(batch, N, M)``, ``(batch, P, M)`` or ``(batch, N, P, M)``.
        D: None, a scalar or ``(1,)``, or philtorch's per-time, per-batch and matrix shapes.
        zi: initial state ``(batch, M)`` or ``(M,)``; when given, the final state is returned too.
    Returns:
        ``y`` (``(batch, N)``, ``(batch, N, P)`` or the states ``(batch, N, M)``), and
        ``zf (batch, M)`` when ``zi`` was given.
    """
    if not isinstance(x, Tensor) or x.ndim not in (2, 3):
        raise ValueError(f"x must have shape (batch, N) or (batch, N, F), got {getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(A, Tensor) or A.ndim not in (3, 4) or A.shape[-1] != A.shape[-2] or A.shape[-3] != x.shape[1]:
        raise ValueError(f"A must have shape (N, M, M) or (batch, N, M, M) with N={x.shape[1]}, "
                         f"got {getattr(A, 'shape', type(A).__name__)}")
    x, A, B, C, D, zi = (resolved(t) if isinstance(t, Tensor) else t for t in (x, A, B, C, D, zi))
    batch, N = x.shape[:2]
    M = A.shape[-1]
    return_zf = zi is not None
    if zi is None:
        zi = x.new_zeros(batch, M)
    elif zi.ndim == 1:
        zi = zi.unsqueeze(0).expand(batch, M)
    vectors = _single_input_single_output(B, C, x, batch, N, M)
    if vectors is not None and _fused_applies(x, A, *vectors, zi, backend=backend):
        y, zf = _FusedStateSpace.apply(coefficient_rows(A, (batch,), tail=3).contiguous(), x.contiguous(),
                                       *(v.contiguous() for v in vectors), zi.expand(batch, M).contiguous())
    else:
        h, zf = linear_recurrence(A, _input_term(B, x, batch, N, M), zi, return_final=True, backend=backend)
        before = torch.cat([zi.unsqueeze(1), h[:, :-1]], dim=1)  # h[t]: the state entering step t
        y = _output_term(C, before, batch, N, M)
    if D is not None:
        y = y + _feedthrough(D, x, batch, N)
    return (y, zf) if return_zf else y
