"""The Python a launch costs the host: through Triton's JIT function against DIRECT_LAUNCH's call
of the compiled kernel (``triton_scan.Launch._run_compiled``), on any machine.

    python bench/launch_overhead.py [-B 16] [-T 65536] [-M 2] [--repeat 5]

Without a GPU there is nothing to launch, so Triton's driver is replaced by one that names device 0
and stream 0, and each kernel by a stand-in compiled kernel whose launcher does nothing: what is
timed is the Python in front of the launcher (the JIT function's binding, specialisation and cache
lookup and its check of the globals the kernel reads, or the direct call's alignment key), for the
cached plan of each pass at the GPU's launch shapes. The launcher itself (the same for both) and the
GPU are not in it;
``allpole_triton.bench.host_times`` on a GPU measures whole calls. Uses Triton internals
(``driver.set_active``, ``JITFunction._do_compile``, ``device_caches``) that Triton 3.6 and 3.9 share.
"""
from __future__ import annotations

import argparse
import os
import statistics
import timeit

os.environ.pop("TRITON_INTERPRET", None)  # the kernels as JIT functions

import torch  # noqa: E402
import triton  # noqa: E402
from triton import knobs  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import driver  # noqa: E402


class _Driver:
    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_active_torch_device(self):
        return torch.device("cpu")


class _Compiled:
    """A compiled kernel whose launcher does nothing; ``__getitem__`` as Triton's CompiledKernel."""

    function, packed_metadata = 0, None

    def _init_handles(self):
        pass

    def launch_metadata(self, grid, stream, *args):
        return None

    def run(self, *args):
        pass

    def __getitem__(self, grid):
        self._init_handles()

        def runner(*args, stream=None):
            if stream is None:
                stream = driver.active.get_current_stream(driver.active.get_current_device())
            metadata = self.launch_metadata(grid, stream, *args)
            self.run(grid[0], grid[1], grid[2], stream, self.function, self.packed_metadata, metadata,
                     knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook, *args)

        return runner


def _stand_in(kernel, compiled: _Compiled) -> None:
    kernel.cache_key  # noqa: B018 (as compiling does: it finds the globals each launch then checks)

    def do_compile(key, signature, device, constexprs, options, attrs, warmup):
        kernel.device_caches[device][0][key] = compiled  # as Triton caches what it compiles
        return compiled

    kernel._do_compile = do_compile


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-B", type=int, default=16)
    p.add_argument("-T", type=int, default=65536)
    p.add_argument("-M", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5, help="timed rounds of 2000 launches, the two paths taking turns")
    args = p.parse_args(argv)
    driver.set_active(_Driver())
    from allpole_triton.kernels import triton_scan

    triton_scan.DIRECT_LAUNCH = True
    compiled = _Compiled()
    B, T, M = args.B, args.T, args.M
    u, a, zi, out = torch.zeros(B, T), torch.zeros(B, T, M), torch.zeros(B, M), torch.zeros(B, T)
    backward = dict(tail=torch.zeros(B, M), y=torch.zeros(B, T), grad_a=torch.zeros(B, T, M))
    print(f"Triton {triton.__version__}, B={B} T={T} M={M}: us of Python per launch, min and median of "
          f"{args.repeat} rounds of 2000 (no GPU: a stand-in driver and launcher)")
    print("pass,kernel,parameters,jit_min,jit_median,direct_min,direct_median")
    for name, reverse, extra in (("fwd", False, {}), ("bwd", True, backward)):
        for _ in range(3):  # plan, replay through the JIT functions, then direct
            launches, _ = triton_scan.cached_plan(u, a, zi, out, reverse=reverse, sms=132, **extra)
            for launch in launches:
                if not hasattr(launch.kernel, "_do_compile"):
                    raise SystemExit(f"{launch.kernel} is not a JIT function")
                _stand_in(launch.kernel, compiled)
                launch.run()
        for launch in launches:
            if launch.compiled is None or launch.run() is not compiled:
                raise SystemExit(f"{launch.kernel.__name__}: no direct launch")
            jit = (lambda l: lambda: l.kernel[(l.grid,)](*l.args, num_warps=l.num_warps, **l.constexprs))(launch)
            times = {"jit": [], "direct": []}
            for _ in range(args.repeat):
                for path, fn in (("jit", jit), ("direct", launch.run)):
                    times[path].append(timeit.timeit(fn, number=2000) / 2000 * 1e6)
            cells = [f"{f(times[path]):.1f}" for path in ("jit", "direct") for f in (min, statistics.median)]
            parameters = len(launch.args) + len(launch.compiled.constants)
            print(",".join([name, launch.kernel.__name__, str(parameters)] + cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
