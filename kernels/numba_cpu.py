"""Numba CPU kernels: the forward recursion and its adjoint, parallel over batch rows.

Each row is a sequential recursion, so rows are the only parallelism on the CPU. Terms of a
sample's sum are accumulated oldest-first and may be reassociated (``reassoc``), so only the
newest term sits on the loop-carried dependency chain; no ``nnan``/``ninf`` flags, so NaN and
Inf propagate exactly as in a plain loop.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.cpython.unsafe.tuple import tuple_setitem
from numba.core import cgutils
from numba.extending import intrinsic, overload

_FLAGS = dict(parallel=True, cache=True, fastmath={"reassoc", "contract"})


# Measured on 2 cores, B=8, T=65536, float32: the register-chain loop wins for M <= 2
# (0.7 ns/sample at M=1 vs 1.4), the contiguous dot product wins above (2.4 ns at M=16 vs 5.8).
SHORT_ORDER_MAX = 2
# The forward keeps the past outputs of orders up to this in a tuple (registers): raw kernel,
# same shape, 0.86 -> 0.23 ms at M=3, 1.33 -> 0.62 at M=8, 1.59 -> 1.21 at M=16 against the
# in-memory dot product, whose vector load of the output just stored stalls store forwarding.
# Above it (complex: above half of it, two registers a value) the tuple spills: complex64 at M=16
# took 11 ms against 4.0.
REGISTER_ORDER_MAX = 16


def allpole_forward(x, a, zi, y):
    """Write y (B, T) from x (B, T), a (Ba, Ta, M), zi (B, M)."""
    M = a.shape[2]
    if M <= SHORT_ORDER_MAX:
        _forward_short(x, a, zi, y)
    elif M <= REGISTER_ORDER_MAX // (2 if np.iscomplexobj(y) else 1):
        # the tuple's length is a compile-time constant: one specialisation per order and dtype
        _forward_registers(x, a, zi, y, (y.dtype.type(0),) * M)
    else:
        # two rows per thread interleave their independent recursions and hide each other's latency
        rows_per_group = 2 if x.shape[0] >= 2 * nb.get_num_threads() else 1
        _forward_long(x, a, zi, y, rows_per_group)


@nb.njit(cache=True)
def _broadcast_steps(a):  # pragma: no cover - compiled
    """Row and time strides (in rows / samples) of coefficients (Ba, Ta, ...): 0 along a broadcast dim."""
    return (1 if a.shape[0] > 1 else 0), (1 if a.shape[1] > 1 else 0)


@nb.njit(inline="always")
def _put_grad(grad, r, n, k, term, summed):  # pragma: no cover - compiled
    """A coefficient's gradient term: ``grad[r, n, k] = term`` per sample, or added to
    ``grad[r, 0, k]`` when ``summed`` (coefficients constant over time; the caller zeroes it first)."""
    if summed:
        grad[r, 0, k] += term
    else:
        grad[r, n, k] = term


@nb.njit(cache=True)
def _pair_rows(pair, B, row_step):  # pragma: no cover - compiled
    """The two rows a thread interleaves (an odd B's last pair is one row twice) and the rows of
    their coefficients."""
    b0 = 2 * pair
    b1 = min(b0 + 1, B - 1)
    return b0, b1, b0 * row_step, b1 * row_step


@nb.njit(cache=True)
def _time_summed_grad_a(b, grad_x, y, zi, grad_a, zero):  # pragma: no cover - compiled
    """grad_a[b, 0, i-1] = -sum_n lam[n] conj(y[n-i]) for coefficients constant over time (Ta = 1),
    as M dot products after the row's recursion (y[n-i] from zi when n < i)."""
    T = grad_x.shape[1]
    for i in range(1, grad_a.shape[2] + 1):
        total = zero
        for n in range(min(i, T)):
            total += grad_x[b, n] * np.conj(zi[b, i - n - 1])
        for n in range(i, T):
            total += grad_x[b, n] * np.conj(y[b, n - i])
        grad_a[b, 0, i - 1] = -total


@nb.njit(**_FLAGS)
def _forward_short(x, a, zi, y):  # pragma: no cover - compiled
    """M <= 2: y[n-1] and y[n-2] live in registers, so only one FMA sits on the loop-carried chain,
    and each thread runs two rows' recursions interleaved, so one hides the other's FMA latency
    (B=8, T=65536, M=2, reused buffers: 1.6 -> 0.36 ns/sample). With an odd B the last pair is
    one row twice."""
    B, T = x.shape
    M = a.shape[2]
    row_step, time_step = _broadcast_steps(a)
    for pair in nb.prange((B + 1) // 2):
        b0, b1, ab0, ab1 = _pair_rows(pair, B, row_step)
        last0, last1 = zi[b0, 0], zi[b1, 0]  # y[n-1]
        older0, older1 = zi[b0, M - 1], zi[b1, M - 1]  # y[n-2] when M == 2
        for n in range(T):
            an = n * time_step
            acc0, acc1 = x[b0, n], x[b1, n]
            if M == 2:
                acc0 -= a[ab0, an, 1] * older0
                acc1 -= a[ab1, an, 1] * older1
                older0, older1 = last0, last1
            last0 = acc0 - a[ab0, an, 0] * last0
            last1 = acc1 - a[ab1, an, 0] * last1
            y[b0, n] = last0
            y[b1, n] = last1


@nb.njit(inline="always")
def _state_tuple(zi, b, zeros):  # pragma: no cover - compiled
    """(y[-1], ..., y[-M]) of row b as a tuple shaped like ``zeros``."""
    state = zeros
    for i in range(len(zeros)):
        state = tuple_setitem(state, i, zi[b, i])
    return state


@nb.njit(inline="always")
def _older_terms(coeffs, state):  # pragma: no cover - compiled
    """sum_{i >= 2} a[n, i-1] y[n-i]: every term but the newest, off the loop-carried chain."""
    total = coeffs[1] * state[1]
    for i in range(2, len(state)):
        total += coeffs[i] * state[i]
    return total


# Coefficient rows are prefetched this many steps ahead: at M=16 the hardware prefetchers kept a
# cold (8, 65536, 16) float32 forward at 3.2-3.7 ms, against 1.5-1.7 with 16-64 steps of software
# prefetch (raw kernel, caches evicted before each call).
PREFETCH_STEPS = 32


@intrinsic
def _prefetch(typingctx, array, row, n):
    """Hint that ``array[row, n, 0, ...]`` (an array of 2 or more dims, any strides) will be read
    soon (llvm.prefetch: read, high locality; never faults)."""
    if not (isinstance(array, types.Array) and array.ndim >= 2):
        return None

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        index = [context.cast(builder, value, ty, types.intp) for value, ty in zip(args[1:], signature.args[1:])]
        rest = [context.get_constant(types.intp, 0)] * (array_type.ndim - 2)
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, index + rest)
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        # the name mangles the pointer type as llvmlite prints it: "p0" for "ptr", "p0i8" for "i8*"
        # (an LLVM with opaque pointers upgrades the typed name)
        name = "llvm.prefetch.p0" if str(byte_pointer) == "ptr" else "llvm.prefetch.p0i8"
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), name)
        builder.call(function, [builder.bitcast(pointer, byte_pointer), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(array, row, n), codegen


@nb.njit(inline="always")
def _prefetch_row(a, row, n):  # pragma: no cover - compiled
    """Prefetch the coefficient row a[row, n] if n is a time of a."""
    if 0 <= n < a.shape[1]:
        _prefetch(a, row, n)


@nb.njit(**_FLAGS)
def _forward_registers(x, a, zi, y, zeros):  # pragma: no cover - compiled
    """3 <= M <= REGISTER_ORDER_MAX: y[n-1 .. n-M] in a tuple of M registers (``zeros`` gives its
    length and type), shifted by one each step, so only y[n-1]'s FMA sits on the loop-carried
    chain; two rows interleaved per thread as in _forward_short."""
    B, T = x.shape
    row_step, time_step = _broadcast_steps(a)
    for pair in nb.prange((B + 1) // 2):
        b0, b1, ab0, ab1 = _pair_rows(pair, B, row_step)
        state0 = _state_tuple(zi, b0, zeros)
        state1 = _state_tuple(zi, b1, zeros)
        for n in range(T):
            an = n * time_step
            if time_step:
                _prefetch_row(a, ab0, n + PREFETCH_STEPS)
                _prefetch_row(a, ab1, n + PREFETCH_STEPS)
            coeffs0, coeffs1 = a[ab0, an], a[ab1, an]
            rest0 = x[b0, n] - _older_terms(coeffs0, state0)
            rest1 = x[b1, n] - _older_terms(coeffs1, state1)
            new0 = rest0 - coeffs0[0] * state0[0]
            new1 = rest1 - coeffs1[0] * state1[0]
            state0 = (new0,) + state0[:-1]
            state1 = (new1,) + state1[:-1]
            y[b0, n] = new0
            y[b1, n] = new1


@nb.njit(**_FLAGS)
def _forward_long(x, a, zi, y, rows_per_group):  # pragma: no cover - compiled
    """Many taps: past outputs kept time-reversed so a[n, :] . y[n-1 .. n-M] is one contiguous,
    vectorised dot product (0-based views, so no negative-index wraparound blocks vectorising)."""
    B, T = x.shape
    M = a.shape[2]
    row_step, time_step = _broadcast_steps(a)
    for group in nb.prange((B + rows_per_group - 1) // rows_per_group):
        first = group * rows_per_group
        rows = min(B, first + rows_per_group) - first
        reversed_y = np.empty((rows, T + M), dtype=x.dtype)  # reversed_y[r, T-1-n] = y[n], n >= -M
        for r in range(rows):
            for j in range(M):
                reversed_y[r, T + j] = zi[first + r, j]
        for n in range(T):
            an = n * time_step
            for r in range(rows):
                b = first + r
                coeffs = a[b * row_step, an]
                past = reversed_y[r, T - n:T - n + M]
                acc = x[b, n]
                for i in range(M):
                    acc -= coeffs[i] * past[i]
                reversed_y[r, T - n - 1] = acc
                y[b, n] = acc


# grad_a rows are written with non-temporal stores (no read of each line before it is written, no
# cache pollution) from this many bytes, past the caches of one core. Raw write of a (8, 65536, 16)
# float32 grad_a: 2.8 -> 1.1 ms with cold caches, 1.65 -> 0.8 ms warm.
STREAM_MIN_BYTES = 4 << 20
VECTOR_BYTES = 32


def streams_grad_a(grad_a: np.ndarray, per_sample: bool) -> bool:
    """Whether _backward_long can write grad_a's rows as whole aligned vectors of VECTOR_BYTES."""
    row = grad_a.shape[2] * grad_a.itemsize
    return (per_sample and grad_a.dtype.kind == "f" and grad_a.flags.c_contiguous and grad_a.nbytes >= STREAM_MIN_BYTES
            and row % VECTOR_BYTES == 0 and grad_a.ctypes.data % VECTOR_BYTES == 0)


def allpole_backward(grad_y, a, y, zi, grad_x, grad_zi, grad_a, need_grad_a):
    """Write grad_x (B, T), grad_zi (B, M) and, if ``need_grad_a``, grad_a (B, Ta, M) (see _backward_long)."""
    if a.shape[2] <= SHORT_ORDER_MAX:
        _backward_short(grad_y, a, y, zi, grad_x, grad_zi, grad_a, need_grad_a)
    else:
        stream = streams_grad_a(grad_a, need_grad_a and a.shape[1] > 1)
        # grad_a's rows as one flat array for the streamed stores (built here: Numba cannot reshape
        # a strided array, and it types the streamed branch even when it is not taken)
        flat_grad_a = grad_a.reshape(-1) if stream else np.empty(0, grad_a.dtype)
        _backward_long(grad_y, a, y, zi, grad_x, grad_zi, grad_a, need_grad_a, stream, flat_grad_a)


@intrinsic
def _stream_scaled_vector(typingctx, dst, dst_start, src, src_start, scale):
    """dst[dst_start : dst_start + n] = scale * src[src_start : src_start + n] for the n floats of
    one VECTOR_BYTES vector, stored non-temporally; the destination must be VECTOR_BYTES-aligned."""
    if not (isinstance(dst, types.Array) and isinstance(dst.dtype, types.Float) and dst.dtype == src.dtype):
        return None
    sig = types.void(dst, dst_start, src, src_start, scale)

    def codegen(context, builder, signature, args):
        dst_value, dst_index, src_value, src_index, factor = args
        dtype = signature.args[0].dtype
        element = context.get_data_type(dtype)
        vector = ir.VectorType(element, VECTOR_BYTES * 8 // dtype.bitwidth)
        dst_array = context.make_array(signature.args[0])(context, builder, dst_value)
        src_array = context.make_array(signature.args[2])(context, builder, src_value)
        source = builder.bitcast(builder.gep(src_array.data, [src_index]), vector.as_pointer())
        values = builder.load(source, align=dtype.bitwidth // 8)
        factor = context.cast(builder, factor, signature.args[4], dtype)
        splat = builder.insert_element(ir.Constant(vector, ir.Undefined), factor, ir.Constant(ir.IntType(32), 0))
        splat = builder.shuffle_vector(splat, ir.Constant(vector, ir.Undefined),
                                       ir.Constant(ir.VectorType(ir.IntType(32), vector.count), [0] * vector.count))
        target = builder.bitcast(builder.gep(dst_array.data, [dst_index]), vector.as_pointer())
        store = builder.store(builder.fmul(values, splat), target, align=VECTOR_BYTES)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _store_fence(typingctx):
    """Order the non-temporal stores before everything after (they are weakly ordered)."""
    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


def _stream_row(dst, dst_start, src, src_start, scale, count):  # pragma: no cover - typed by overload
    raise NotImplementedError


@overload(_stream_row, inline="always")
def _stream_row_impl(dst, dst_start, src, src_start, scale, count):
    """dst[dst_start + i] = scale * src[src_start + i] for i < count (a multiple of a vector; aligned
    destination) as non-temporal vector stores. Real dtypes only (see streams_grad_a); others, and
    mixed dtypes, get plain stores (never called: this only types the branch)."""
    if not (isinstance(dst.dtype, types.Float) and dst.dtype == src.dtype):
        def plain(dst, dst_start, src, src_start, scale, count):  # pragma: no cover - compiled
            for i in range(count):
                dst[dst_start + i] = scale * src[src_start + i]

        return plain
    lanes = VECTOR_BYTES * 8 // dst.dtype.bitwidth

    def streamed(dst, dst_start, src, src_start, scale, count):  # pragma: no cover - compiled
        for k in range(0, count, lanes):
            _stream_scaled_vector(dst, dst_start + k, src, src_start + k, scale)

    return streamed


@nb.njit(**_FLAGS)
def _backward_short(grad_y, a, y, zi, grad_x, grad_zi, grad_a, need_grad_a):  # pragma: no cover
    """M <= 2: _backward_long's recursion with lam[m] and the one pending sum in registers, two
    rows interleaved per thread (as in _forward_short; an odd B's last pair is one row twice)."""
    B, T = grad_y.shape
    M = a.shape[2]
    row_step, time_step = _broadcast_steps(a)
    for pair in nb.prange((B + 1) // 2):
        b0, b1, ab0, ab1 = _pair_rows(pair, B, row_step)
        zero = np.zeros(1, dtype=grad_y.dtype)[0]  # a true 0 of grad_y's type (not x - x: NaN stays out)
        lam0, lam1 = grad_y[b0, T - 1], grad_y[b1, T - 1]
        pending0, pending1 = zero, zero  # partial sums for lam[m-1] from lam[m+1] (M == 2)
        for m in range(T - 1, -1, -1):
            am = m * time_step
            grad_x[b0, m] = lam0
            grad_x[b1, m] = lam1
            g0 = grad_y[b0, m - 1] if m >= 1 else zero
            g1 = grad_y[b1, m - 1] if m >= 1 else zero
            next0 = (pending0 + g0) - np.conj(a[ab0, am, 0]) * lam0
            next1 = (pending1 + g1) - np.conj(a[ab1, am, 0]) * lam1
            if M == 2:
                pending0 = zero - np.conj(a[ab0, am, 1]) * lam0
                pending1 = zero - np.conj(a[ab1, am, 1]) * lam1
            if need_grad_a and time_step:
                for i in range(1, M + 1):
                    past0 = y[b0, m - i] if m >= i else zi[b0, i - m - 1]
                    past1 = y[b1, m - i] if m >= i else zi[b1, i - m - 1]
                    grad_a[b0, m, i - 1] = -lam0 * np.conj(past0)
                    grad_a[b1, m, i - 1] = -lam1 * np.conj(past1)
            lam0, lam1 = next0, next1
        grad_zi[b0, 0], grad_zi[b1, 0] = lam0, lam1
        if M == 2:
            grad_zi[b0, 1], grad_zi[b1, 1] = pending0, pending1
        if need_grad_a and not time_step:
            _time_summed_grad_a(b0, grad_x, y, zi, grad_a, zero)
            _time_summed_grad_a(b1, grad_x, y, zi, grad_a, zero)


@nb.njit(**_FLAGS)
def _backward_long(grad_y, a, y, zi, grad_x, grad_zi, grad_a, need_grad_a, stream, flat_grad_a):  # pragma: no cover
    """The adjoint recursion, run backwards in time, with grad_a fused into the same pass.

    lam[n] = grad_y[n] - sum_i conj(a[n+i, i-1]) * lam[n+i] for n = T-1 .. -M, terms with n+i
    outside [0, T) vanishing; grad_x[n] = lam[n] and grad_zi[i] = lam[-1-i].
    grad_a[n, i-1] = -lam[n] * conj(y[n-i]) (y[n-i] from zi when n < i); with Ta = 1 it is
    summed over time by _time_summed_grad_a after the row's recursion (an in-loop running sum
    in memory made the M=1 backward 3.5x slower). Written in scatter form: once lam[m] is final
    it is pushed into the pending sums of lam[m-1 .. m-M] with the contiguous row a[m, :],
    instead of gathering the diagonal a[n+i, i-1]. ``stream``: grad_a's rows go out as
    non-temporal vector stores (see streams_grad_a).
    """
    B, T = grad_y.shape
    M = a.shape[2]
    row_step, time_step = _broadcast_steps(a)
    per_sample = need_grad_a and time_step
    for b in nb.prange(B):
        ab = b * row_step
        # pending[j] = partial sum for lam[m-1-j]; pending[M] stays 0 so the last tap needs no case
        pending = np.zeros(M + 1, dtype=grad_y.dtype)
        zero = pending[M]
        if per_sample:
            # past[T-1-n] = -conj(y[n]) for n >= -M (zi below 0): grad_a[m, :] = lam[m] * past[T-m:T-m+M],
            # one contiguous vectorised product per step
            past = np.empty(T + M, dtype=grad_y.dtype)
            for n in range(T):
                past[T - 1 - n] = -np.conj(y[b, n])
            for j in range(M):
                past[T + j] = -np.conj(zi[b, j])
        lam = grad_y[b, T - 1]
        for m in range(T - 1, -1, -1):
            am = m * time_step
            if time_step:
                _prefetch_row(a, ab, m - PREFETCH_STEPS)
            grad_x[b, m] = lam
            # lam[m-1] leaves the chain after a single FMA; its grad_y term is added off-chain
            g_prev = grad_y[b, m - 1] if m >= 1 else zero
            lam_next = (pending[1] + g_prev) - np.conj(a[ab, am, 0]) * lam
            for j in range(1, M):
                pending[j] = pending[j + 1] - np.conj(a[ab, am, j]) * lam
            if stream:
                _stream_row(flat_grad_a, (b * T + m) * M, past, T - m, lam, M)
            elif per_sample:
                for i in range(M):
                    grad_a[b, m, i] = lam * past[T - m + i]
            lam = lam_next
        grad_zi[b, 0] = lam
        for j in range(1, M):
            grad_zi[b, j] = pending[j]
        if stream:
            _store_fence()
        if need_grad_a and not time_step:
            _time_summed_grad_a(b, grad_x, y, zi, grad_a, zero)
