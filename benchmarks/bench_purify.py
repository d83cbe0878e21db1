"""Benchmark: one purification gradient d/dx <w, purify(x)>, side by side.

Methods, same network and batch (``--arch digits``: the shipped digits UNet on 1x8x8, batch 32;
``--arch cifar``: a diffusers UNet2DModel with the google/ddpm-cifar10-32 configuration, random
weights, on 3x32x32, batch 4):

* ``ours-full`` / ``ours-checkpoint`` / ``ours-segments``: ``dbp_core.purifier.Purifier`` per grad mode;
* ``plain``: the loop peers write — torch.randn noise, eager posterior-mean arithmetic, plain autograd;
* ``peer-ckpt``: the same loop with each step under ``torch.utils.checkpoint(use_reentrant=False)``;
* ``diffusers``: a ``diffusers.DDPMScheduler`` loop (fixed_large, no clipping, custom timesteps);
* ``floor``: the network's own forward + backward (to its input) summed over the steps, timed alone;
* ``floor-ckpt``: what per-step checkpointing must do at least: per step a forward without a graph,
  then a forward + backward (2 forwards + 1 backward);
* ``floor-seg``: the network work of ``segments``: (2S - segments) forwards without a graph and S
  forward + backward.

Gradients are taken with ``torch.autograd.grad(out, x, w)`` (as attacks do; the weights are not
frozen, so nothing may compute their gradients needlessly). Time: all methods of one chain length
run round-robin in one process (benchmarks/_harness.py: ratios are medians of per-round ratios over
``--repeats`` rounds, times the best; with one thread the clock is the thread's CPU time).
Memory: each (method, steps) in a fresh process: the high-water mark of torch's CPU allocator
during one gradient (exact, from the profiler's allocation events) and the growth of the
process's peak RSS. A method whose memory, extrapolated from its two
shorter chains, would exceed ``--mem-limit-gb`` is skipped at the longer chain (the row says so).

    python benchmarks/bench_purify.py                         # 10/100/1000 steps, digits
    python benchmarks/bench_purify.py --steps 10 100 --repeats 3   # quicker
    python benchmarks/bench_purify.py --arch cifar --steps 5 --repeats 2 --no-memory
    python benchmarks/bench_purify.py --samplers --steps 10 100 --mem-steps 10 100 1000 --batch 8

``--samplers``: every sampler and option (``SAMPLER_SETTINGS``: DDPM with and without clipping, a
learned variance, DDIM with eta, the VP-SDE and its ODE, GDMP guidance) in the ``checkpoint`` and
``full`` modes against the floors above (their network work is the same: one call per step), round-robin
per chain length; memory: the ``checkpoint`` mode's allocator peak per sampler at each chain length.
"""
from __future__ import annotations

import argparse
import math
import sys

import torch

try:
    from . import _harness as H
except ImportError:  # run as a script
    import _harness as H

TIME_METHODS = ("floor", "floor-ckpt", "floor-seg", "ours-full", "ours-checkpoint", "ours-segments", "plain",
                "peer-ckpt", "diffusers")
MEM_METHODS = ("ours-full", "ours-checkpoint", "ours-segments", "plain", "peer-ckpt", "diffusers")

# google/ddpm-cifar10-32 config.json (diffusers UNet2DModel; 35.7 M parameters). Attention at
# 16x16 on both paths: down block 1 and up block 2 (up blocks run from the lowest resolution).
CIFAR10_DDPM_CONFIG = dict(
    sample_size=32, in_channels=3, out_channels=3, center_input_sample=False,
    time_embedding_type="positional", freq_shift=1, flip_sin_to_cos=False,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(128, 256, 256, 256), layers_per_block=2, mid_block_scale_factor=1,
    downsample_padding=0, act_fn="silu", attention_head_dim=None, norm_num_groups=32, norm_eps=1e-6,
)

ARCHS = {"digits": dict(batch=32, shape=(1, 8, 8)), "cifar": dict(batch=4, shape=(3, 32, 32))}

# Purifier options per sampler (docs/science.md). "learned" runs the network through LearnedHead.
SAMPLER_SETTINGS = {
    "ddpm": dict(sampler="ddpm"),
    "ddpm-clip": dict(sampler="ddpm", clip_denoised=True, clamp_output=True),
    "ddpm-learned-clip": dict(sampler="ddpm", variance="learned", clip_denoised=True),
    "ddim-eta0.5-clip": dict(sampler="ddim", eta=0.5, clip_denoised=True),
    "vpsde": dict(sampler="vpsde"),
    "vpode": dict(sampler="vpode"),
    "gdmp": dict(sampler="ddpm", clip_denoised=True, guidance=("noised", 30.0, 0.2)),
}


class LearnedHead(torch.nn.Module):
    """A guided-diffusion style [eps, v] output from an eps network (v = tanh(eps)), to time the
    learned-variance step at the same network cost."""

    learned_variance = True

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        eps = self.net(x, t)
        return torch.cat([eps, torch.tanh(eps)], dim=1)


def sampler_purifier(name: str, net, steps: int, mode: str):
    from dbp_core.purifier import Purifier, noise
    from dbp_core.purifier.guidance import Guidance
    kw = dict(SAMPLER_SETTINGS[name])
    if "guidance" in kw:
        target, scale, eps = kw["guidance"]
        kw["guidance"] = Guidance(scale, eps, target)
    model = LearnedHead(net) if kw.get("variance") == "learned" else net
    return Purifier(model, t_star=t_star_for(steps), steps=steps, noise=noise.stochastic(), grad_mode=mode, **kw)


def cifar_unet(seed: int = 0):
    """The CIFAR-10 DDPM architecture with random weights, as ``eps_model(x, t)`` (eval mode)."""
    from diffusers import UNet2DModel

    from dbp_core.models.loaders import DiffusersEps
    torch.manual_seed(seed)
    return DiffusersEps(UNet2DModel(**CIFAR10_DDPM_CONFIG)).eval()


def make_net(arch: str):
    if arch == "cifar":
        return cifar_unet()
    try:
        from dbp_core.models.zoo import default_diffusion
        return default_diffusion("digits")
    except Exception:  # noqa: BLE001 — weights not shipped: same architecture, random weights
        from dbp_core.models.unet import UNet, UNetConfig
        return UNet(UNetConfig(base_channels=16, channel_mult=(1, 2, 2))).eval()


def setup(arch: str, batch: int | None = None):
    net = make_net(arch)
    b = batch or ARCHS[arch]["batch"]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, *ARCHS[arch]["shape"], generator=g)
    w = torch.randn(x.shape, generator=g)  # the output gradient: <w, purify(x)>
    with torch.no_grad():
        net(x, torch.zeros(b, dtype=torch.long))
    return net, x, w, torch.arange(b)


def t_star_for(steps: int) -> float:
    return 0.1 if steps <= 100 else 1.0


def make_method(method: str, steps: int, net, x, w, uids, segments: int | None = None, wrt: str = "x"):
    """A function computing one purification gradient (or the floor's network work).

    ``wrt="x"``: the gradient an attack needs, ``torch.autograd.grad(out, x, w)`` (the weights'
    gradients are not computed). ``wrt="x+weights"``: ``out.backward(w)`` with the weights
    requiring grad — what a loop calling ``loss.backward()`` on an unfrozen model computes (the
    weights' gradients too, accumulated into ``.grad``, which is cleared before each call)."""
    from torch.utils.checkpoint import checkpoint

    from dbp_core.purifier import Purifier, noise
    from dbp_core.purifier.diffusion import linear_schedule, reverse_chain

    t_star = t_star_for(steps)
    schedule = linear_schedule()
    chain = reverse_chain(schedule, schedule.steps_for(t_star), steps, "ddpm")
    ts = [st.t for st in chain]
    b = x.shape[0]
    tt = [torch.full((b,), t, dtype=torch.long) for t in ts]

    params = [p for p in net.parameters() if p.requires_grad]

    def grad_of(fn):
        def run():
            v = x.detach().requires_grad_()
            if wrt == "x":
                return torch.autograd.grad(fn(v), v, w)[0]
            for p in params:
                p.grad = None
            fn(v).backward(w)
            return v.grad
        return run

    if ":" in method:  # "<sampler>:<grad mode>"
        name, mode = method.split(":")
        pur = sampler_purifier(name, net, steps, mode)
        return grad_of(lambda v: pur(v, uids))

    if method.startswith("ours-"):
        pur = Purifier(net, t_star=t_star, steps=steps, noise=noise.stochastic(), grad_mode=method[5:],
                       segments=segments)
        return grad_of(lambda v: pur(v, uids))

    if method in ("plain", "peer-ckpt"):
        ab = schedule.alpha_bar

        def step(xt, i):
            t = ts[i]
            ab_prev = ab[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
            alpha = ab[t] / ab_prev
            eps = net(xt, tt[i])
            mean = (xt - (1 - alpha) / (1 - ab[t]).sqrt() * eps) / alpha.sqrt()
            return mean + (1 - alpha).sqrt() * torch.randn_like(xt) if i + 1 < len(ts) else mean

        def loop(v):
            xt = ab[ts[0]].sqrt() * (2 * v - 1) + (1 - ab[ts[0]]).sqrt() * torch.randn_like(v)
            for i in range(len(ts)):
                xt = checkpoint(step, xt, i, use_reentrant=False) if method == "peer-ckpt" else step(xt, i)
            return (xt + 1) / 2
        return grad_of(loop)

    if method == "diffusers":
        from diffusers import DDPMScheduler
        sch = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                            variance_type="fixed_large", clip_sample=False)
        sch.set_timesteps(timesteps=ts)

        def diff(v):
            xt = sch.add_noise(2 * v - 1, torch.randn_like(v), torch.tensor([ts[0]]))
            for t in sch.timesteps:
                xt = sch.step(net(xt, t.expand(b)), t, xt).prev_sample
            return (xt + 1) / 2
        return grad_of(diff)

    if method.startswith("floor"):
        n = len(ts)
        segs = min(segments or max(1, math.ceil(math.sqrt(n))), n)
        per = math.ceil(n / segs)
        extra = {"floor": 0, "floor-ckpt": n, "floor-seg": 2 * n - len(range(0, n, per))}[method]
        u0 = (2 * x - 1)

        def floor():  # the network alone; the input is the same image at every step
            with torch.no_grad():
                for i in range(extra):
                    net(u0, tt[i % n])
            for i in range(n):
                u = u0.detach().requires_grad_()
                torch.autograd.grad(net(u, tt[i]), [u] + (params if wrt != "x" else []), w)
        return floor
    raise ValueError(method)


# --- time: every method of one chain length round-robin in this process ---

def measure_time(arch: str, steps: int, methods, repeats: int, batch: int | None = None,
                 warmup: int = 1, wrt: str = "x") -> H.Timings:
    net, x, w, uids = setup(arch, batch)
    fns = {m: make_method(m, steps, net, x, w, uids, wrt=wrt) for m in methods}
    if not warmup:  # warm the kernels on a 1-step chain instead of a whole round
        for m in methods:
            make_method(m, 1, net, x, w, uids, wrt=wrt)()
    return H.interleaved(fns, repeats, warmup)


# --- memory: one (method, steps) per fresh process ---

def memory_one(arch: str, method: str, steps: int, batch: int | None = None) -> dict:
    net, x, w, uids = setup(arch, batch)
    fn = make_method(method, steps, net, x, w, uids)
    make_method(method, 2, net, x, w, uids)()  # warm-up: kernels, oneDNN primitives, lazy imports
    H.reset_peak_rss()
    base, peak0 = H.current_rss_mb(), H.peak_rss_mb()
    fn()
    rss_growth = max(0.0, H.peak_rss_mb() - max(base, peak0))
    alloc, _ = H.alloc_high_water(fn)
    return {"method": method, "steps": steps, "alloc_mb": alloc, "rss_growth_mb": rss_growth,
            "rss_peak_mb": H.peak_rss_mb(), "rss_base_mb": base}


def measure_memory(arch: str, steps_list, methods, mem_limit_gb: float, batch: int | None = None,
                   threads: int = 1, log=None, methods_at: dict | None = None) -> dict[tuple[str, int], dict]:
    """``methods_at``: {steps: methods} restricts the methods measured at some chain lengths."""
    def run_one(m: str, s: int) -> dict:
        argv = [__file__, "--arch", arch, "--one-mem", m, str(s), "--threads", str(threads)]
        return H.run_json(argv + (["--batch", str(batch)] if batch else []))

    wanted = (lambda m, s: s not in methods_at or m in methods_at[s]) if methods_at else None
    return H.memory_sweep(methods, steps_list, run_one, "alloc_mb", mem_limit_gb * 1024, wanted=wanted,
                          log=log and (lambda msg: log(f"memory {arch} {msg}")),
                          describe=lambda r: f"{r['alloc_mb']:.1f} MB allocator peak")


# --- rows of the one table ---

def sampler_methods() -> list[str]:
    return ["floor", "floor-ckpt"] + [f"{n}:{m}" for n in SAMPLER_SETTINGS for m in ("full", "checkpoint")]


def sampler_time_rows(arch: str, steps: int, T: H.Timings) -> list[H.Row]:
    area = f"samplers {arch}, {steps} steps"
    rows = []
    for n in SAMPLER_SETTINGS:
        for mode, floor, what in (("checkpoint", "floor-ckpt", "2 fwd + 1 bwd"), ("full", "floor", "fwd + bwd")):
            k = f"{n}:{mode}"
            if k in T and floor in T:
                rows.append(H.Row(area, f"{n} {mode} vs its floor ({what})", T.ratio(k, floor),
                                  detail=f"{T.best(k):.3g} s vs {T.best(floor):.3g} s"))
    return rows


def _alloc_row(area: str, m: str, s: int, r: dict) -> H.Row:
    """The allocator peak of method m at s steps (a point of ``H.memory_sweep``)."""
    what = f"{m} allocator peak, {s} steps"
    if r.get("skipped"):
        return H.skipped_row(area, what, "MB", r, "skipped")
    return H.Row(area, what, r["alloc_mb"], unit="MB", detail=f"peak RSS growth {r['rss_growth_mb']:.0f} MB")


def sampler_memory_rows(arch: str, mem: dict[tuple[str, int], dict]) -> list[H.Row]:
    area = f"samplers memory {arch}"
    rows = [_alloc_row(area, m, s, r) for (m, s), r in mem.items()]  # memory_sweep's order
    steps_all = sorted({s for _, s in mem})
    if len(steps_all) >= 2:
        lo, hi = steps_all[0], steps_all[-1]
        for n in SAMPLER_SETTINGS:
            a = mem.get((f"{n}:checkpoint", hi), {}).get("alloc_mb")
            b = mem.get((f"{n}:checkpoint", lo), {}).get("alloc_mb")
            if a and b:
                rows.append(H.Row(area, f"{n}:checkpoint memory {hi} vs {lo} steps", a / b,
                                  detail=f"{a:.1f} vs {b:.1f} MB"))
    return rows


def time_rows(arch: str, steps: int, T: H.Timings, wrt: str = "x") -> list[H.Row]:
    area = f"purify {arch}, {steps} steps" + (", grad wrt x + weights" if wrt != "x" else "")
    t = {k: T.best(k) for k in T}
    s = lambda k: f"{t[k]:.3g} s"  # noqa: E731
    rows = []

    def add(what, a, b, target="", speedup=False):
        if a in t and b in t:
            value = T.ratio(b, a) if speedup else T.ratio(a, b)
            rows.append(H.Row(area, what, value, target=target, detail=f"{s(a)} vs {s(b)}"))

    add("ours-full vs floor (network fwd+bwd alone)", "ours-full", "floor", "<= 1.10")
    add("floor of any per-step checkpointing vs floor (1 + F/(F+B))", "floor-ckpt", "floor")
    add("ours-checkpoint vs its floor (2 fwd + 1 bwd)", "ours-checkpoint", "floor-ckpt", "<= 1.10")
    add("ours-segments vs its floor (3 fwd + 1 bwd - segments)", "ours-segments", "floor-seg", "<= 1.10")
    # not a target but the rule for the default mode: segments only where it costs < 15%
    add("ours-segments time vs ours-checkpoint (segments default iff < 1.15)", "ours-segments", "ours-checkpoint")
    for other in ("plain", "diffusers"):
        add(f"speed-up of ours-full over {other} loop", "ours-full", other, speedup=True)
    add("speed-up of ours-checkpoint over peer per-step checkpoint", "ours-checkpoint", "peer-ckpt", speedup=True)
    # the headline target on the CIFAR-10 architecture: memory-bounded modes at <= 1.4x the plain loop
    bound = "<= 1.4" if arch == "cifar" else ""
    add("ours-checkpoint time vs plain loop", "ours-checkpoint", "plain", bound)
    add("ours-segments time vs plain loop", "ours-segments", "plain", bound)
    add("peer per-step checkpoint time vs plain loop", "peer-ckpt", "plain")
    return rows


def memory_rows(arch: str, mem: dict[tuple[str, int], dict]) -> list[H.Row]:
    area = f"memory {arch}"
    rows = [_alloc_row(area, m, s, r) for m, s, r in H.sweep_points(mem, MEM_METHODS)]
    a = lambda m, s: mem.get((m, s), {}).get("alloc_mb")  # noqa: E731
    if a("ours-segments", 1000) and a("ours-segments", 100):
        rows.append(H.Row(area, "ours-segments memory 1000 vs 100 steps",
                          a("ours-segments", 1000) / a("ours-segments", 100), target="<= 1.5",
                          detail=f"{a('ours-segments', 1000):.1f} vs {a('ours-segments', 100):.1f} MB"))
    if a("ours-checkpoint", 1000) and a("ours-checkpoint", 100):
        rows.append(H.Row(area, "ours-checkpoint memory 1000 vs 100 steps",
                          a("ours-checkpoint", 1000) / a("ours-checkpoint", 100),
                          detail=f"{a('ours-checkpoint', 1000):.1f} vs {a('ours-checkpoint', 100):.1f} MB"))
    if a("ours-segments", 100) and a("plain", 100):
        rows.append(H.Row(area, "ours-segments vs plain loop memory, 100 steps",
                          a("ours-segments", 100) / a("plain", 100), target="<= 0.2",
                          detail=f"{a('ours-segments', 100):.1f} vs {a('plain', 100):.1f} MB"))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=tuple(ARCHS), default="digits")
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--methods", nargs="+", default=list(TIME_METHODS), choices=TIME_METHODS)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--wrt", choices=("x", "x+weights"), default="x",
                    help="gradient wrt the input only (attacks) or also the weights (loss.backward())")
    ap.add_argument("--mem-limit-gb", type=float, default=8.0)
    ap.add_argument("--samplers", action="store_true", help="every sampler vs its floor; memory vs chain length")
    ap.add_argument("--mem-steps", type=int, nargs="+", default=None,
                    help="chain lengths of the memory sweep (default: --steps)")
    ap.add_argument("--one-mem", nargs=2, metavar=("METHOD", "STEPS"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    H.set_threads(a.threads)
    if a.one_mem:
        H.emit(memory_one(a.arch, a.one_mem[0], int(a.one_mem[1]), a.batch))
        return
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    rows = []
    if a.samplers:
        for s in a.steps:
            t = measure_time(a.arch, s, sampler_methods(), a.repeats, a.batch)
            rows += sampler_time_rows(a.arch, s, t)
        if not a.no_memory:
            mem = measure_memory(a.arch, a.mem_steps or a.steps, [f"{n}:checkpoint" for n in SAMPLER_SETTINGS],
                                 a.mem_limit_gb, a.batch, a.threads, log)
            rows += sampler_memory_rows(a.arch, mem)
        print(f"{a.arch}: batch {a.batch or ARCHS[a.arch]['batch']}; {H.header(a.repeats)}")
        print(H.render(rows))
        return
    for s in a.steps:
        t = measure_time(a.arch, s, a.methods, a.repeats, a.batch, wrt=a.wrt)
        log(f"time {a.arch} {s} steps: " + ", ".join(f"{k} {t.best(k):.3g}s" for k in t))
        rows += time_rows(a.arch, s, t, a.wrt)
    if not a.no_memory:
        mem = measure_memory(a.arch, a.steps, [m for m in MEM_METHODS if m in a.methods], a.mem_limit_gb, a.batch,
                             a.threads, log)
        rows += memory_rows(a.arch, mem)
    print(f"{a.arch}: batch {a.batch or ARCHS[a.arch]['batch']}; {H.header(a.repeats)}")
    print(H.render(rows))


if __name__ == "__main__":
    main()
