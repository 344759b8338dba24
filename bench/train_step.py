"""One training step of a small LPC synthesis model, with our filter and with torchlpc, side by side.

    python bench/train_step.py [--steps 20] [--threads N]

The model (B=8, 2 s at 16 kHz, order 16): a small convolutional network reads a frame-rate
conditioning signal and emits, per 10 ms frame, 16 reflection coefficients (bounded by tanh) and a
log gain; the reflection coefficients become a stable LPC filter per frame (step-up recursion),
held over the frame's samples, the gain is interpolated linearly, and the all-pole filter shapes a
noise excitation (``--per-sample``: the reflection coefficients are interpolated to every sample
and stepped up there). The loss
is a multi-resolution log-spectral distance to a fixed target. A step is forward, backward and an
Adam update. The two filters alternate step by step in one process (same model, same data), and
the script prints the min, median and spread of each one's step time and their ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import Tensor, nn

from allpole_triton import reflection_to_lpc, sample_wise_lpc

SAMPLE_RATE = 16000
SECONDS = 2.0
BATCH = 8
ORDER = 16
HOP = 160  # 10 ms frames


class LPCSynth(nn.Module):
    """Frame-rate conditioning ``(B, C, frames)`` -> audio ``(B, frames * HOP)`` through ``lpc``."""

    def __init__(self, channels: int = 16, hidden: int = 64, per_sample: bool = False) -> None:
        super().__init__()
        self.per_sample = per_sample
        self.net = nn.Sequential(
            nn.Conv1d(channels, hidden, 3, padding=1), nn.GELU(),
            nn.Conv1d(hidden, hidden, 3, padding=1), nn.GELU(),
            nn.Conv1d(hidden, ORDER + 1, 1),
        )

    def forward(self, cond: Tensor, excitation: Tensor, lpc) -> Tensor:
        params = self.net(cond)  # (B, ORDER + 1, frames)
        gain = nn.functional.interpolate(params[:, ORDER:], scale_factor=HOP, mode="linear")[:, 0].exp()
        if self.per_sample:  # reflection coefficients interpolated to every sample, then stepped up
            k = nn.functional.interpolate(params[:, :ORDER], scale_factor=HOP, mode="linear").transpose(1, 2)
            return lpc(gain * excitation, reflection_to_lpc(0.95 * torch.tanh(k)))
        # a stable filter per frame, held for the frame's samples; the gain glides linearly
        a = reflection_to_lpc(0.95 * torch.tanh(params[:, :ORDER].transpose(1, 2)))  # (B, frames, ORDER)
        return lpc(gain * excitation, a.repeat_interleave(HOP, dim=1))


def log_spectral_distance(x: Tensor, y: Tensor) -> Tensor:
    loss = x.new_zeros(())
    for n_fft in (256, 512, 1024):
        window = torch.hann_window(n_fft, dtype=x.dtype)
        X = torch.stft(x, n_fft, n_fft // 4, window=window, return_complex=True).abs()
        Y = torch.stft(y, n_fft, n_fft // 4, window=window, return_complex=True).abs()
        loss = loss + (torch.log(X + 1e-5) - torch.log(Y + 1e-5)).abs().mean()
    return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per filter (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--per-sample", action="store_true",
                        help="step up reflection coefficients interpolated to every sample (the step-up "
                        "recursion then costs several times the filter) instead of once per frame")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    filters = {"allpole_triton": sample_wise_lpc}
    try:
        import torchlpc

        filters["torchlpc"] = torchlpc.sample_wise_lpc
    except ImportError:
        print("torchlpc is not installed: timing ours alone")

    g = torch.Generator().manual_seed(0)
    T = int(SECONDS * SAMPLE_RATE)
    frames = T // HOP
    cond = torch.randn(BATCH, 16, frames, generator=g)
    excitation = torch.randn(BATCH, frames * HOP, generator=g)
    target = torch.randn(BATCH, frames * HOP, generator=g)

    torch.manual_seed(0)
    model = LPCSynth(per_sample=args.per_sample)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(lpc) -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = log_spectral_distance(model(cond, excitation, lpc), target)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    times = {name: [] for name in filters}
    for _ in range(2):
        for lpc in filters.values():
            step(lpc)
    for _ in range(args.steps):
        for name, lpc in filters.items():
            times[name].append(step(lpc))

    print(f"B={BATCH}, T={frames * HOP} ({SECONDS:g} s at {SAMPLE_RATE} Hz), M={ORDER}, float32, "
          f"filter {'per sample' if args.per_sample else 'per frame'}, "
          f"{torch.get_num_threads()} torch threads, {args.steps} steps each, alternating")
    for name, t in times.items():
        median = statistics.median(t)
        print(f"{name:15s} step: min {1e3 * min(t):7.1f} ms  median {1e3 * median:7.1f} ms  "
              f"spread {(max(t) - min(t)) / median:.2f}")
    if len(times) == 2:
        ours, theirs = (statistics.median(t) for t in times.values())
        print(f"ratio (median step, ours / torchlpc): {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
