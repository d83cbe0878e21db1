"""What checking a checkpoint costs next to loading it (``dbp check`` / the check before ``dbp run``).

    python benchmarks/bench_checkpoints.py                 # a guided-diffusion 256x256 uncond file, 2.2 GB
    python benchmarks/bench_checkpoints.py --preset score-sde
    python benchmarks/bench_checkpoints.py --path /ckpt/256x256_diffusion_uncond.pt --format guided-diffusion

Writes a checkpoint of the chosen preset with its real size (random weights; in a temporary folder,
removed afterwards) unless ``--path`` names one, then, each in a fresh process: ``check_model``
(network on the meta device, file inspected without its weights) and ``load_model`` (network
built, weights read and copied). Prints seconds and resident-memory growth (current RSS after the
call minus before, the result still held) of each and their ratios.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import current_rss_mb, emit, run_json  # noqa: E402

PRESETS = {"guided-diffusion": "256x256_diffusion_uncond", "score-sde": "cifar10_ddpmpp_deep_continuous"}


def one(path: str, fmt: str, how: str) -> dict:
    from dbp_core.models.loaders import check_model, load_model, model_spec
    before = current_rss_mb()
    t0 = time.perf_counter()
    held = (check_model if how == "check" else load_model)(model_spec(path, "diffusion", fmt))
    return {"seconds": time.perf_counter() - t0, "rss_mb": current_rss_mb() - before, "held": held is not None}


def write(folder: str, fmt: str) -> str:
    import torch
    from dbp_core.models.loaders import build_network, model_spec
    path = os.path.join(folder, "checkpoint.pt")
    net = build_network(model_spec(path, "diffusion", fmt, arch=PRESETS[fmt]))
    if fmt == "score-sde":  # score_sde's training layout, EMA list included (what DiffPure loads)
        state = net.state_dict()
        obj = {"model": {"module." + k: v for k, v in state.items()}, "step": 0,
               "ema": {"decay": 0.9999, "num_updates": 0, "shadow_params": [p.detach() for p in net.parameters()]}}
    else:
        obj = net.state_dict()
    torch.save(obj, path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="guided-diffusion")
    ap.add_argument("--path", help="an existing checkpoint instead of a written one")
    ap.add_argument("--format", dest="fmt", help="its diffusion format (with --path)")
    ap.add_argument("--one", nargs=3, metavar=("PATH", "FORMAT", "HOW"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        emit(one(*args.one))
        return
    fmt = args.fmt or args.preset
    with tempfile.TemporaryDirectory() as tmp:
        path = args.path or write(tmp, fmt)
        size_mb = os.path.getsize(path) / 2 ** 20
        res = {how: run_json([__file__, "--one", path, fmt, how]) for how in ("check", "load")}
    print(f"{fmt} checkpoint, {size_mb:,.0f} MB")
    for how, r in res.items():
        print(f"  {how:5s}  {r['seconds']:7.2f} s   RSS +{r['rss_mb']:7.0f} MB")
    print(f"  check / load: time {res['check']['seconds'] / res['load']['seconds']:.3f}, "
          f"memory {max(res['check']['rss_mb'], 0) / res['load']['rss_mb']:.4f}")


if __name__ == "__main__":
    main()
