"""Fit a feed-forward compressor's threshold, ratio, knee, make-up, attack, release and detector time.

    python examples/fit_compressor.py                 # exact (td) training
    python examples/fit_compressor.py --method fs     # frequency-sampling baseline, then run exactly

The input is a train of noise bursts at random levels; the target is that input through a
compressor with hidden "true" parameters (or --input/--target WAVs). A fresh compressor is fitted
with Adam on the ESR; the script prints ESR before and after, the recovered parameters, and writes
examples/out/compressor_{method}.png (loss, static curves, gain over time) and the WAVs.
"""
from __future__ import annotations

import torch

from allpole_triton.systems import Compressor, FrequencySampling, static_gain_db
from example_utils import Timer, evaluate, parse_args, read_wav_pair, report, save_figure, train, write_wavs

SAMPLE_RATE = 44100
TRUE = dict(threshold_db=-24.0, ratio=4.0, knee_db=4.0, makeup_db=3.0, attack_ms=5.0, release_ms=60.0, detector_ms=2.0)
FS = FrequencySampling(hop=256, n_fft=1024)


def make_input(seconds: float, seed: int) -> torch.Tensor:
    """``(1, T)`` noise bursts every 125 ms, levels uniform in [-40, 0] dB, 60 ms decay."""
    generator = torch.Generator().manual_seed(seed)
    T = int(seconds * SAMPLE_RATE)
    burst = SAMPLE_RATE // 8
    n = torch.arange(burst)
    envelope = torch.cat([
        10 ** (-40 * torch.rand(1, generator=generator) / 20) * torch.exp(-n / (0.06 * SAMPLE_RATE))
        for _ in range(-(-T // burst))
    ])[:T]
    return (envelope * torch.randn(T, generator=generator)).unsqueeze(0)


def make_data(seconds: float, seed: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    x = make_input(seconds, seed)
    with torch.no_grad():
        target = Compressor(SAMPLE_RATE, **TRUE)(x)
    return x.to(device), target.to(device)


def fit(steps: int = 600, seed: int = 0, method: str = "td", seconds: float = 3.0, device: str = "cpu",
        lr: float = 0.05, data: tuple[torch.Tensor, torch.Tensor] | None = None, sample_rate: int = SAMPLE_RATE,
        progress: bool = False) -> dict:
    """Fit a fresh :class:`Compressor` (default initial parameters); history as in ``fit_phaser.fit``."""
    torch.manual_seed(seed)
    x, target = make_data(seconds, seed, device) if data is None else (t.to(device) for t in data)
    model = Compressor(sample_rate, method=method, fs=FS).to(device)
    before = evaluate(model, x, target)
    losses = train(model, x, target, steps=steps, lr=lr, progress=progress)
    after = evaluate(model, x, target)
    return dict(losses=losses, before=before, after=after, recovered=model.physical_parameters(),
                model=model, x=x, target=target)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], default_steps=600, default_seconds=3.0)
    data, sample_rate, true = None, SAMPLE_RATE, TRUE
    if args.input is not None:
        x, y, sample_rate = read_wav_pair(args.input, args.target, args.seconds)
        data, true = (x, y), None
    with Timer() as timer:
        history = fit(args.steps, args.seed, args.method, args.seconds, args.device, data=data,
                      sample_rate=sample_rate, progress=True)
    report(f"compressor, trained with method={args.method}", history["before"], history["after"],
           history["recovered"], true, timer.seconds)
    model, x, target = history["model"], history["x"], history["target"]
    with torch.no_grad():
        model.method = "td"
        prediction = model(x)
    levels = torch.linspace(-60, 0, 200)

    def static_curves(ax):
        recovered = {k: torch.tensor(v) for k, v in history["recovered"].items()}
        ax.plot(levels, levels + static_gain_db(levels, recovered["threshold_db"], recovered["ratio"],
                                                recovered["knee_db"]) + recovered["makeup_db"], label="recovered")
        if true is not None:
            t = {k: torch.tensor(v) for k, v in true.items()}
            ax.plot(levels, levels + static_gain_db(levels, t["threshold_db"], t["ratio"], t["knee_db"])
                    + t["makeup_db"], "--", label="true")
        ax.set(xlabel="input level (dB)", ylabel="output level (dB)")
        ax.legend()

    def gains(ax):
        xs = x.detach().cpu().reshape(-1)
        keep = xs.abs() > 1e-3
        times = torch.arange(xs.numel())[keep] / sample_rate
        for signal, label in ((target, "target"), (prediction, f"prediction ({args.method}-trained, run exactly)")):
            gain_db = 20 * torch.log10((signal.detach().cpu().reshape(-1)[keep] / xs[keep]).abs() + 1e-9)
            ax.plot(times, gain_db, ".", markersize=1, label=label)
        ax.set(xlabel="time (s)", ylabel="gain (dB)")
        ax.legend(markerscale=10)

    out = args.out
    save_figure(out / f"compressor_{args.method}.png", history["losses"],
                [("static curve", static_curves), ("gain over time", gains)])
    write_wavs(out, sample_rate, compressor_input=x, compressor_target=target,
               **{f"compressor_prediction_{args.method}": prediction})
    print(f"\nwrote {out}/compressor_{args.method}.png and WAVs")


if __name__ == "__main__":
    main()
