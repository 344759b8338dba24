"""Numba block kernels of the frozen real-time processors (:mod:`allpole_triton.realtime`).

Each call renders one block of every row (``(R, L)`` arrays) and updates the row's state arrays in
place. Everything per sample (LFO, envelopes, oscillator phase, coefficients, filter) is computed
from the absolute sample index and the carried state, one sample after another in float64, so a
stream cut into blocks anywhere gives the same samples as one long block, bit for bit. Inputs and
outputs may be float32 or float64; the arithmetic is float64 either way. Serial: a plugin calls
these for a few rows of 32-512 samples, where a thread-pool launch would cost more than the work.

Parameters arrive as one float64 array per processor, in the order of the ``*_PARAMS`` tuples.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

_FLAGS = dict(cache=True, error_model="numpy")  # no fastmath: the same rounding as a plain loop

PHASER_PARAMS = ("rate_hz", "lfo_phase", "depth_octaves", "centre_hz", "feedback", "mix")
COMPRESSOR_PARAMS = ("threshold_db", "ratio", "knee_db", "makeup_db", "attack", "release", "detector")
SYNTH_PARAMS = (
    "square_mix", "log_cutoff_start", "log_cutoff_end", "cutoff_glide_s", "q_start", "q_end", "q_glide_s",
    "attack_s", "decay_s", "gain",
)
POWER_FLOOR = 1e-10  # -100 dB: keeps log10 finite on silence (the compressor's detector, here and in torch)


@nb.njit(**_FLAGS)
def phaser_block(x, y, start, params, sample_rate, stages, past_x, past_y):  # pragma: no cover - compiled
    """Phaser of ``stages`` all-pass stages on x ``(R, L)`` into y; ``past_x``/``past_y`` ``(R, K)``
    hold ``x[n-1-i]`` / ``y[n-1-i]`` (direct form I), ``start`` is the block's first sample index."""
    rate, lfo_phase, depth, centre, feedback, mix = params[0], params[1], params[2], params[3], params[4], params[5]
    K = stages
    binomial = np.empty(K + 1)
    binomial[0] = 1.0
    for k in range(1, K + 1):
        binomial[k] = binomial[k - 1] * (K - k + 1) / k
    powers = np.empty(K + 1)
    b = np.empty(K + 1)
    a = np.empty(K + 1)
    R, L = x.shape
    for n in range(L):
        time = (start + n) / sample_rate
        octaves = depth * math.sin(2 * math.pi * rate * time + lfo_phase)
        break_hz = min(max(centre * math.exp(octaves * math.log(2.0)), 10.0), 0.45 * sample_rate)
        t = math.tan(math.pi * break_hz / sample_rate)
        p = (t - 1) / (t + 1)
        powers[0] = 1.0
        for k in range(1, K + 1):
            powers[k] = powers[k - 1] * p
        leading = 1.0
        for k in range(K + 1):
            numerator = binomial[k] * powers[K - k]  # (p + z^-1)^K
            denominator = binomial[k] * powers[k] - feedback * numerator  # (1 + p z^-1)^K - g N
            if k == 0:
                leading = denominator
            b[k] = (1 - mix) * denominator + mix * numerator
            a[k] = denominator
        for k in range(K + 1):
            b[k] /= leading
            a[k] /= leading
        for r in range(R):
            xn = np.float64(x[r, n])
            acc = b[0] * xn
            for k in range(1, K + 1):
                acc += b[k] * past_x[r, k - 1]
            for i in range(1, K + 1):
                acc -= a[i] * past_y[r, i - 1]
            for i in range(K - 1, 0, -1):
                past_x[r, i] = past_x[r, i - 1]
                past_y[r, i] = past_y[r, i - 1]
            past_x[r, 0] = xn
            past_y[r, 0] = acc
            y[r, n] = acc


@nb.njit(**_FLAGS)
def compressor_block(x, y, params, power, gain):  # pragma: no cover - compiled
    """Feed-forward compressor on x ``(R, L)`` into y; ``power``/``gain`` ``(R,)`` carry the
    detector's mean square and the smoothed gain (see allpole_triton.systems.compressor)."""
    threshold, ratio, knee, makeup_db, attack, release, detector = (
        params[0], params[1], params[2], params[3], params[4], params[5], params[6]
    )
    slope = 1 / ratio - 1
    makeup = math.exp(makeup_db / 20 * math.log(10.0))
    R, L = x.shape
    for r in range(R):
        p, g = power[r], gain[r]
        for n in range(L):
            xn = np.float64(x[r, n])
            p = detector * (xn * xn) - (detector - 1) * p
            level = 10 * math.log10(max(p, 0.0) + POWER_FLOOR)
            over = level - threshold
            if 2 * over <= -knee:
                gain_db = 0.0
            elif 2 * over >= knee:
                gain_db = slope * over
            else:
                gain_db = slope * (over + knee / 2) ** 2 / (2 * knee)
            target = math.exp(gain_db / 20 * math.log(10.0))
            c = attack if target < g else release
            g = c * target - (c - 1) * g
            y[r, n] = xn * g * makeup
        power[r], gain[r] = p, g


@nb.njit(**_FLAGS)
def _polyblep(phase, increment):  # pragma: no cover - compiled
    """The residual of allpole_triton.systems.synth.polyblep, by the same operations."""
    v = (phase if phase < 0.5 else phase - 1) / increment
    w = max(1 - abs(v), 0.0)
    return math.copysign(w * w, -v)


@nb.njit(**_FLAGS)
def _oscillator_sample(phase, hz, sample_rate):  # pragma: no cover - compiled
    """Saw and square of the PolyBLEP oscillator at the unwrapped ``phase`` (cycles) and ``hz``, by
    the operations of allpole_triton.systems.synth.polyblep_oscillator."""
    cycles = phase - np.trunc(phase)  # torch.frac (np.trunc stays float: inf - inf is NaN, as in torch)
    increment = min(max(hz / sample_rate, 1e-9), 0.5)
    blep = _polyblep(cycles, increment)
    saw = 2 * cycles - 1 - blep
    half = cycles + 0.5
    square = (1.0 if cycles < 0.5 else -1.0) + blep - _polyblep(half - np.trunc(half), increment)
    return saw, square


@nb.njit(**_FLAGS)
def oscillator_block(f0, phase, sample_rate, saw, square):  # pragma: no cover - compiled
    """The synth's oscillator alone: saw and square ``(R, L)`` (float64) following ``f0 (R, L)`` in
    Hz, ``phase (R,)`` the unwrapped phase in cycles, advanced in place. The torch synth's forward
    on CPU without gradients (the same operations as its torch ops, so the same bits)."""
    R, L = f0.shape
    for r in range(R):
        for n in range(L):
            hz = np.float64(f0[r, n])
            saw[r, n], square[r, n] = _oscillator_sample(phase[r], hz, sample_rate)
            phase[r] += hz / sample_rate


@nb.njit(**_FLAGS)
def synth_block(f0, y, start, params, sample_rate, sections, phase, past_x, past_y):  # pragma: no cover
    """Subtractive synth following the pitch ``f0 (R, L)`` in Hz into y; ``phase (R,)`` is the
    unwrapped oscillator phase in cycles, ``past_x``/``past_y (R, S, 2)`` each biquad's DF-I state
    (see allpole_triton.systems.synth)."""
    square_mix, log_start, log_end, cutoff_glide = params[0], params[1], params[2], params[3]
    q_start, q_end, q_glide, attack_s, decay_s, gain = params[4], params[5], params[6], params[7], params[8], params[9]
    R, L = f0.shape
    for n in range(L):
        time = (start + n) / sample_rate
        cutoff = min(math.exp(log_end + (log_start - log_end) * math.exp(-time / cutoff_glide)), 0.45 * sample_rate)
        q = q_end + (q_start - q_end) * math.exp(-time / q_glide)
        w0 = 2 * math.pi * cutoff / sample_rate
        cos_w0 = math.cos(w0)
        alpha = math.sin(w0) / (2 * q)
        a0 = 1 + alpha
        b1 = (1 - cos_w0) / a0
        b0 = b1 / 2
        a1 = -2 * cos_w0 / a0
        a2 = (1 - alpha) / a0
        envelope = gain * (1 - math.exp(-time / attack_s)) * math.exp(-time / decay_s)
        for r in range(R):
            hz = np.float64(f0[r, n])
            saw, square = _oscillator_sample(phase[r], hz, sample_rate)
            phase[r] += hz / sample_rate
            v = (1 - square_mix) * saw + square_mix * square
            for s in range(sections):
                out = b0 * v + b1 * past_x[r, s, 0] + b0 * past_x[r, s, 1] - a1 * past_y[r, s, 0] - a2 * past_y[r, s, 1]
                past_x[r, s, 1], past_x[r, s, 0] = past_x[r, s, 0], v
                past_y[r, s, 1], past_y[r, s, 0] = past_y[r, s, 0], out
                v = out
            y[r, n] = v * envelope


@nb.njit(**_FLAGS)
def attack_release_choices(target, attack, release, initial, choose_attack):  # pragma: no cover
    """The sequential attack/release decisions of ``g[n] = g[n-1] + c[n] (target[n] - g[n-1])``:
    ``choose_attack[r, n] = target[r, n] < g[r, n-1]``, for target ``(R, L)``, coefficients and
    ``initial = g[-1]`` ``(R,)`` (as torchcomp finds them; used by the torch Compressor on CPU)."""
    R, L = target.shape
    for r in range(R):
        g = initial[r]
        at, rt = attack[r], release[r]
        for n in range(L):
            f = target[r, n]
            attacking = f < g
            choose_attack[r, n] = attacking
            c = at if attacking else rt
            g = c * f - (c - 1) * g
