"""Stream a WAV file through an audio system block by block, as a plugin host would.

    python examples/realtime.py                          # 5 s of noise through a default phaser
    python examples/realtime.py --input in.wav --system compressor --block 64
    python examples/realtime.py --system synth           # the synth plays a rising note (no input)

The system (default parameters, or a trained state dict with --weights) is frozen with
``system.freeze()`` and fed ``--block`` samples per call; the script prints the real-time factor
(audio duration / processing time, median and 99th percentile per block), checks the streamed
output against the module's offline render, and writes examples/out/realtime_<system>.wav.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from allpole_triton.systems import Compressor, Phaser, SubtractiveSynth

OUT_DIR = Path(__file__).resolve().parent / "out"
SYSTEMS = {"phaser": Phaser, "compressor": Compressor, "synth": SubtractiveSynth}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=SYSTEMS, default="phaser")
    parser.add_argument("--input", type=Path, help="input WAV (mono or the first channel); default: noise")
    parser.add_argument("--weights", type=Path, help="a state dict saved from a trained system")
    parser.add_argument("--block", type=int, default=64, help="samples per call")
    parser.add_argument("--seconds", type=float, default=5.0, help="length when there is no --input")
    parser.add_argument("--sample-rate", type=float, default=48000.0, help="when there is no --input")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    if args.block < 1:
        parser.error(f"--block must be >= 1, got {args.block}")

    import soundfile as sf

    if args.input:
        audio, sample_rate = sf.read(args.input, dtype="float32", always_2d=True)
        signal = audio[:, 0]
    else:
        sample_rate = args.sample_rate
        signal = (0.3 * np.random.default_rng(0).standard_normal(int(args.seconds * sample_rate))).astype(np.float32)
    if args.system == "synth":  # the synth's input is a pitch curve in Hz
        signal = (220.0 * 1.5 ** np.linspace(0, 1, len(signal))).astype(np.float32)
    system = SYSTEMS[args.system](sample_rate=float(sample_rate))
    if args.weights:
        system.load_state_dict(torch.load(args.weights))
    frozen = system.freeze()
    print(frozen)

    frozen.process(signal[None, : args.block])  # compile (or load the cached kernel) before timing
    frozen.reset()
    blocks, times = [], []
    for start in range(0, len(signal), args.block):
        block = signal[None, start : start + args.block]
        begin = time.perf_counter()
        blocks.append(frozen.process(block))
        times.append(time.perf_counter() - begin)
    output = np.concatenate(blocks, axis=-1)[0]

    budget = args.block / sample_rate
    median, p99 = statistics.median(times), float(np.percentile(times, 99))
    print(f"{len(times)} blocks of {args.block} samples at {sample_rate:g} Hz: "
          f"median {1e6 * median:.1f} us, p99 {1e6 * p99:.1f} us per block (budget {1e6 * budget:.0f} us)")
    print(f"real-time factor: {budget / median:.0f}x (median), {budget / p99:.0f}x (p99)")
    with torch.no_grad():
        offline = system.double()(torch.from_numpy(signal[None].astype(np.float64)))[0].numpy()
    error = np.abs(output - offline).max() / max(np.abs(offline).max(), 1e-30)
    print(f"streamed vs offline module: max error {error:.1e} of the peak (float32 output)")

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"realtime_{args.system}.wav"
    sf.write(path, output, int(sample_rate))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
