"""What bf16 costs and saves: the noise network under bfloat16 autocast (``[purifier] precision``)
against float32, side by side in one run (docs/performance.md, "Performance"; docs/science.md, "Network precision").

Two settings, each one purification gradient computed in both precisions (replayed noise, so the
only difference is the network's arithmetic; ``checkpoint`` gradient mode, t* as below):

* ``attack``: the gradient an attack takes — d/dx of the cross-entropy of the shipped digits
  classifier on the shipped digits DDPM's purification (clipped, 5 steps, t* = 0.2), 32 test digits
  x EOT 4 (the setting ``tests/test_precision.py`` recomputes and compares with this file's figure);
* ``cifar``: d/dx <w, purify(x)> through the CIFAR-10 DDPM UNet (35.7 M parameters, random weights),
  batch 4, 5 steps, t* = 0.1.

Per setting: the cosine between the bf16 and fp32 gradients (over the whole batch, and the lowest
per example), the fraction of pixels whose Linf step sign(grad) agrees, and the time of bf16 over
fp32 (round-robin, median of per-round ratios). Writes ``benchmarks/precision.json``.

    python benchmarks/bench_precision.py             # ~2 min on one core
    python benchmarks/bench_precision.py --repeats 1 --settings attack
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    from . import _harness as H
except ImportError:  # run as a script
    import _harness as H

OUT = Path(__file__).resolve().parent / "precision.json"
SETTINGS = ("attack", "cifar")


def attack_gradient_fn(precision: str, n: int = 32, eot: int = 4):
    """A function computing d/dx sum CE(defended(x)) over ``eot`` replicas on the first ``n`` digits
    test images (models loaded once, outside the timed calls)."""
    from dbp_core.models.datasets import load_dataset
    from dbp_core.models.defended import DefendedClassifier
    from dbp_core.models.zoo import default_classifier, default_diffusion
    from dbp_core.purifier import Purifier, noise

    data = load_dataset("digits", "test")
    x, y, uids = data.x[:n], data.y[:n], data.uids[:n]
    pur = Purifier(default_diffusion(), t_star=0.2, steps=5, noise=noise.replay(3), grad_mode="checkpoint",
                   clip_denoised=True, clamp_output=True, precision=precision)
    defended = DefendedClassifier(default_classifier(), pur)

    def grad() -> torch.Tensor:
        v = x.clone().requires_grad_()
        loss = F.cross_entropy(defended(v, uids, replicas=eot), y.repeat(eot), reduction="sum")
        return torch.autograd.grad(loss, v)[0]
    return grad


def _cifar_fn(precision: str):
    import bench_purify as BP
    from dbp_core.purifier import Purifier, noise

    net, x, w, uids = BP.setup("cifar")  # the UNet wrapped as an eps model (DiffusersEps)
    pur = Purifier(net, t_star=0.1, steps=5, noise=noise.replay(3), grad_mode="checkpoint", precision=precision)

    def grad() -> torch.Tensor:
        v = x.clone().requires_grad_()
        return torch.autograd.grad(pur(v, uids), v, w)[0]
    return grad


def agreement(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Cosine (whole batch; lowest per example) and Linf step-sign agreement of two gradients."""
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    return {"cosine": float(F.cosine_similarity(fa.flatten(), fb.flatten(), dim=0)),
            "cosine_min_example": float(F.cosine_similarity(fa, fb, dim=1).min()),
            "sign_agreement": float((fa.sign() == fb.sign()).double().mean())}


def measure(setting: str, repeats: int) -> dict:
    if setting == "attack":
        fns = {p: attack_gradient_fn(p) for p in ("fp32", "bf16")}
    else:
        fns = {p: _cifar_fn(p) for p in ("fp32", "bf16")}
    grads = {p: f() for p, f in fns.items()}
    times = H.interleaved(fns, repeats, warmup=0)
    return {**agreement(grads["bf16"], grads["fp32"]), "time_bf16_over_fp32": times.ratio("bf16", "fp32"),
            "fp32_s": min(times["fp32"]), "bf16_s": min(times["bf16"])}


def rows(results: dict) -> list:
    """run_all.py's rows: the time ratio, with the gradient agreement it costs."""
    return [H.Row("precision", f"bf16 vs fp32 network, {s}: time", r["time_bf16_over_fp32"],
                  detail=f"gradient cosine {r['cosine']:.5f}, step-sign agreement {100 * r['sign_agreement']:.2f}%")
            for s, r in results.items()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    H.set_threads(args.threads)
    results = {"torch": torch.__version__, "threads": args.threads, "repeats": args.repeats}
    print(f"bf16 vs fp32 network ({H.header(args.repeats)})")
    print("| setting | cosine | lowest cosine per example | step-sign agreement | bf16 time / fp32 time |")
    print("|---|---|---|---|---|")
    for s in args.settings:
        r = results[s] = measure(s, args.repeats)
        print(f"| {s} | {r['cosine']:.5f} | {r['cosine_min_example']:.4f} | {100 * r['sign_agreement']:.2f}% | "
              f"{r['time_bf16_over_fp32']:.2f}x ({r['bf16_s']:.2f} s vs {r['fp32_s']:.2f} s) |")
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    args.out.write_text(json.dumps({**old, **results}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
