"""White-box feature extraction against its floor and the batch-size-1 loop baseline.

Measures in one run, on the same model and the same scans:
  (a) floor: a plain batched forward + backward of the summed loss (what training costs);
  (b) whitebox: the project's full white-box extraction as the product runs it
      (:class:`BatchComputer`: exact per-sample gradients by the fastest exact method, measured
      in the warm-up pass like cuDNN's benchmark mode, per-layer gradient norms, full gradients of
      first_conv / last_conv / output, activations, copied to host memory);
  (c) loop: the naive baseline, one forward + backward per scan, computing the same features;
  (d) with ``--each-method``: the extraction forced to each exact method (``whitebox:vmap``...).
Methods are interleaved and each timed ``--repeats`` times; medians are compared.
The last line is ``ratio_whitebox_to_floor=X ratio_loop_to_floor=Y ratio_whitebox_to_best=Z``,
best being the faster of floor and loop (target: Z <= 1.1).

``--clock cpu`` times by the process's CPU time instead of wall time: on a machine shared with
other work, with ``--threads 1``, it measures the work each method does, unaffected by the load
(it hides differences in how well methods use several cores, so quote wall times from a quiet machine).

Usage: python benchmarks/features.py [--device cpu|cuda] [--shape 91x109x91] [--scans 8] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from worker.engine.features.batch import BatchComputer
from worker.engine.features.extract import DEFAULT_LAYERS, exact_float32, resolve_layers
from worker.engine.features.methods import JACOBIAN_METHODS
from worker.engine.models import build_architecture, parse_shape


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="brain_age_3d")
    parser.add_argument("--shape", default="91x109x91")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--channels", default="", help="block channels, e.g. 8,16,32,64 (default: the paper's)")
    parser.add_argument("--scans", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--each-method", action="store_true", help="also time the extraction forced to each method")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or the process's CPU time (a shared machine; with --threads 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu measures CPU work: use it with --device cpu")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    torch.manual_seed(0)
    shape = parse_shape(args.shape)
    device = args.device
    arch_kwargs: dict = {"width": args.width}
    if args.channels:
        arch_kwargs["channels"] = [int(c) for c in args.channels.split(",")]
    model = build_architecture(args.arch, **arch_kwargs).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x_all = torch.randn(args.scans, 1, *shape, device=device)
    y_all = 45 + 35 * torch.rand(args.scans, device=device)
    batches = [(x_all[i : i + args.batch_size], y_all[i : i + args.batch_size]) for i in range(0, args.scans, args.batch_size)]

    computer = BatchComputer(model, device, placed=True)
    layers = resolve_layers(DEFAULT_LAYERS, computer.aliases, computer.paths)
    params = dict(model.named_parameters())

    def floor() -> None:
        for p in params.values():
            p.requires_grad_(True)
        for x, y in batches:
            for p in params.values():
                p.grad = None
            ((model(x) - y) ** 2).sum().backward()
        for p in params.values():
            p.requires_grad_(False)

    def extraction(computer: BatchComputer):
        def run() -> None:
            for x, y in batches:
                computer.compute(x, y, True, layers)
        return run

    def loop() -> None:
        for p in params.values():
            p.requires_grad_(True)
        for x, y in batches:
            for i in range(x.shape[0]):
                for p in params.values():
                    p.grad = None
                pred = model(x[i : i + 1]).reshape(())
                ((pred - y[i]) ** 2).backward()
                [p.grad.norm().cpu() for p in params.values()]
                for path in layers:
                    torch.cat([params[n].grad.flatten() for n in params if n.startswith(path + ".")]).cpu()
        for p in params.values():
            p.requires_grad_(False)

    methods = {"floor": floor, "whitebox": extraction(computer), "loop": loop}
    if args.each_method:
        for name in JACOBIAN_METHODS:
            methods[f"whitebox:{name}"] = extraction(BatchComputer(model, device, placed=True, method=name))
    # the product extracts in full float32 (no TF32 on GPUs): every method is timed that way
    with exact_float32():
        for fn in methods.values():  # warm-up (allocators, kernels)
            fn()
        start = time.perf_counter()
        while computer.chooser.method is None:  # the one-off measurement of the methods, done
            methods["whitebox"]()  # once per model, grid and device in a process
        measuring = time.perf_counter() - start
        _sync(device)
        times: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.repeats):
            for name, fn in methods.items():
                _sync(device)
                start = clock()
                fn()
                _sync(device)
                times[name].append(clock() - start)

    med = {name: statistics.median(t) for name, t in times.items()}
    n_params = sum(p.numel() for p in params.values())
    print(f"device={device} arch={args.arch} {arch_kwargs} params={n_params} shape={shape} scans={args.scans} "
          f"batch_size={args.batch_size} threads={torch.get_num_threads()} repeats={args.repeats} "
          f"method={computer.chooser.method} clock={args.clock}")
    print(f"choosing the method took its first pass plus {measuring:.3f} s")
    for name, t in med.items():
        print(f"{name:13s} median {t:8.3f} s  ({args.scans / t:7.2f} scans/s)  runs={[round(v, 3) for v in times[name]]}")
    best = min(med["floor"], med["loop"])
    print(f"ratio_whitebox_to_floor={med['whitebox'] / med['floor']:.3f} ratio_loop_to_floor={med['loop'] / med['floor']:.3f} "
          f"ratio_whitebox_to_best={med['whitebox'] / best:.3f}")


if __name__ == "__main__":
    main()
