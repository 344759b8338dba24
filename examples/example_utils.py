"""Shared parts of the fitting examples: command line, Adam loop, evaluation, WAV and PNG output."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from tqdm import tqdm

from allpole_triton.metrics import esr, esr_db
from allpole_triton.systems.common import StreamingSystem

OUT_DIR = Path(__file__).resolve().parent / "out"


def parse_args(description: str, default_steps: int, default_seconds: float) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--method", choices=("td", "fs"), default="td",
                        help="train with the exact time-domain filter (td) or the frequency-sampling baseline (fs)")
    parser.add_argument("--steps", type=int, default=default_steps, help="Adam steps")
    parser.add_argument("--seconds", type=float, default=default_seconds, help="length of the rendered signals")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input", type=Path, help="input WAV (with --target: fit this pair instead of a rendered target)")
    parser.add_argument("--target", type=Path, help="target WAV")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder for the PNG and WAVs")
    args = parser.parse_args()
    if (args.input is None) != (args.target is None):
        parser.error("--input and --target go together")
    return args


def read_wav_pair(input_path: Path, target_path: Path, seconds: float | None) -> tuple[Tensor, Tensor, int]:
    """Mono float32 ``(1, T)`` input and target from two WAVs of one sample rate, cut to ``seconds``."""
    import soundfile as sf

    x, sr_x = sf.read(input_path, dtype="float32", always_2d=True)
    y, sr_y = sf.read(target_path, dtype="float32", always_2d=True)
    if sr_x != sr_y:
        raise ValueError(f"input and target sample rates differ: {sr_x} vs {sr_y}")
    T = min(len(x), len(y), int(seconds * sr_x) if seconds else len(x))
    return torch.from_numpy(x[:T, 0]).unsqueeze(0), torch.from_numpy(y[:T, 0]).unsqueeze(0), sr_x


def esr_loss(prediction: Tensor, target: Tensor) -> Tensor:
    return esr(prediction, target)


def train(
    model: StreamingSystem,
    inputs: Tensor,
    target: Tensor,
    *,
    steps: int,
    lr: float,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = esr_loss,
    progress: bool = False,
) -> list[float]:
    """Adam with a cosine-decaying step size (to 5% of ``lr``) on ``loss_fn(model(inputs), target)``.

    Returns the loss before each step, and after the last.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1), eta_min=0.05 * lr)
    losses = []
    bar = tqdm(range(steps), disable=not progress, desc=f"fit ({model.method})")
    for _ in bar:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), target)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3g}")
    with torch.no_grad():
        losses.append(loss_fn(model(inputs), target).item())
    return losses


def fit_and_evaluate(model: StreamingSystem, inputs: Tensor, target: Tensor, *, steps: int, lr: float,
                     progress: bool = False) -> dict:
    """:func:`train` between two :func:`evaluate` calls. Returns ``losses``, ``before``, ``after``,
    the ``recovered`` physical parameters, and ``model``, ``x`` (the inputs) and ``target``."""
    before = evaluate(model, inputs, target)
    losses = train(model, inputs, target, steps=steps, lr=lr, progress=progress)
    after = evaluate(model, inputs, target)
    return dict(losses=losses, before=before, after=after, recovered=model.physical_parameters(),
                model=model, x=inputs, target=target)


@torch.no_grad()
def evaluate(model: StreamingSystem, inputs: Tensor, target: Tensor, block: int = 512) -> dict[str, float]:
    """ESR (dB) of the model against ``target``: offline with its own method, offline exact, streamed exact."""
    trained_method = model.method
    offline = model(inputs)
    model.method = "td"
    exact = model(inputs)
    model.method = trained_method
    model.reset()
    streamed = torch.cat([model.process_block(chunk) for chunk in inputs.split(block, dim=-1)], dim=-1)
    return {
        f"offline ({trained_method})": esr_db(offline, target),
        "offline (td)": esr_db(exact, target),
        f"streamed (td, {block}-sample blocks)": esr_db(streamed, target),
        "max |streamed - offline td|": float((streamed - exact).abs().max()),
    }


def report(title: str, before: dict[str, float], after: dict[str, float], recovered: dict[str, float],
           true: dict[str, float] | None, seconds_taken: float) -> None:
    print(f"\n== {title} ({seconds_taken:.1f} s)")
    print(f"{'':40s}{'before':>10s}{'after':>10s}")
    for key in before:
        unit = "" if key.startswith("max") else " dB"
        print(f"ESR {key:36s}{before[key]:10.2f}{after[key]:10.2f}{unit}" if unit else
              f"{key:40s}{before[key]:10.2g}{after[key]:10.2g}")
    print(f"\n{'parameter':20s}{'recovered':>12s}" + (f"{'true':>12s}" if true else ""))
    for name, value in recovered.items():
        print(f"{name:20s}{value:12.4g}" + (f"{true[name]:12.4g}" if true else ""))


def write_wavs(out: Path, sample_rate: int, **signals: Tensor) -> None:
    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    for name, signal in signals.items():
        audio = signal.detach().cpu().reshape(-1).float()
        peak = float(audio.abs().max())
        if peak > 1:  # avoid clipping in the file; the numbers above are on the unscaled signals
            audio = audio / peak
        sf.write(out / f"{name}.wav", audio.numpy(), sample_rate)


def save_figure(path: Path, losses: list[float], panels: list[tuple[str, Callable]]) -> None:
    """Loss curve plus one panel per ``(title, draw(ax))``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(5 * (1 + len(panels)), 4))
    axes[0].semilogy(losses)
    axes[0].set(title="training loss", xlabel="step", ylabel="loss")
    for ax, (title, draw) in zip(axes[1:], panels):
        draw(ax)
        ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def spectrogram_panel(signal: Tensor, sample_rate: int) -> Callable:
    def draw(ax):
        ax.specgram(signal.detach().cpu().reshape(-1).numpy(), NFFT=1024, Fs=sample_rate, noverlap=768, cmap="magma")
        ax.set(xlabel="time (s)", ylabel="frequency (Hz)")
    return draw


def target_and_prediction_spectrograms(history: dict, prediction: Tensor, sample_rate: int, method: str,
                                       true: dict | None) -> list[tuple[str, Callable]]:
    return [
        ("target", spectrogram_panel(history["target"], sample_rate)),
        (f"prediction (trained {method}, run exactly)", spectrogram_panel(prediction, sample_rate)),
    ]


def run_example(
    name: str,
    title: str,
    fit: Callable[..., dict],
    *,
    description: str,
    default_steps: int,
    default_seconds: float,
    sample_rate: int,
    true: dict[str, float],
    panels: Callable[..., list[tuple[str, Callable]]] = target_and_prediction_spectrograms,
    input_is_audio: bool = True,
) -> None:
    """The command line every example shares: fit (on a rendered target, or on --input/--target
    WAVs), print ESR and parameters, then run the fitted model exactly and write
    ``{name}_{method}.png`` and the WAVs."""
    args = parse_args(description, default_steps, default_seconds)
    data = None
    if args.input is not None:
        x, y, sample_rate = read_wav_pair(args.input, args.target, args.seconds)
        data, true = (x, y), None
    with Timer() as timer:
        history = fit(args.steps, args.seed, args.method, args.seconds, args.device, data=data,
                      sample_rate=sample_rate, progress=True)
    report(f"{title}, trained with method={args.method}", history["before"], history["after"],
           history["recovered"], true, timer.seconds)
    model, x, target = history["model"], history["x"], history["target"]
    with torch.no_grad():
        model.method = "td"
        prediction = model(x)
    figure = args.out / f"{name}_{args.method}.png"
    save_figure(figure, history["losses"], panels(history, prediction, sample_rate, args.method, true))
    signals = {f"{name}_input": x} if input_is_audio else {}
    write_wavs(args.out, sample_rate, **signals, **{f"{name}_target": target, f"{name}_prediction_{args.method}": prediction})
    print(f"\nwrote {figure} and WAVs")


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
