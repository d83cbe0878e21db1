"""The ``analysis`` stage: trajectories and landscapes of one configured attack,
written to ``<run>/analysis/{trajectory,landscape}.json`` (read by reports)."""
from __future__ import annotations

from ..analysis.landscape import loss_landscape
from ..analysis.trajectory import attack_trajectory
from ..attacks import NoisePlan
from ..models.defended import DefendedClassifier
from ..purifier import noise as noise_mod
from .context import StageContext


def run(ctx: StageContext) -> dict:
    cfg, res = ctx.cfg, ctx.resources
    an = cfg.analysis
    if not cfg.attacks:
        raise ValueError("stage 'analysis' analyses an attack: add an [[attacks]] entry")
    acfg = next((a for a in cfg.attacks if a.name == an.attack), cfg.attacks[0]) if an.attack else cfg.attacks[0]
    purifier = res.purifier(noise_mod.named(ctx.seed("unseeded")))
    if purifier is None:
        raise ValueError("stage 'analysis' needs a diffusion model (models.diffusion must not be 'none')")
    model = DefendedClassifier(res.classifier(), purifier).to(res.device)  # the classifier normalises
    data = res.data()
    n = min(an.examples, len(data))
    x, y, uids = (t[:n].to(res.device) for t in (data.x, data.y, data.uids))
    summary = {"attack": acfg.name, "examples": n}
    if an.trajectory:
        replicas = max(acfg.eot, 2)
        traj = {}
        for label, plan in (("stochastic", NoisePlan("fresh", ctx.seed("trajectory"))),
                            ("replayed", NoisePlan("replay", ctx.seed("trajectory", "replay")))):
            traj[label] = attack_trajectory(model, x, y, uids, norm=acfg.norm, eps=acfg.eps, step=acfg.step,
                                            iterations=acfg.iterations, replicas=replicas if label == "stochastic" else 1,
                                            plan=plan)
            for i, loss in enumerate(traj[label]["loss"]):
                ctx.metric("trajectory", i, noise=label, loss=loss, cos_successive=traj[label]["cos_successive"][i],
                           cos_replicas=traj[label]["cos_replicas"][i])
        summary["trajectory"] = ctx.write_json("analysis/trajectory.json",
                                               {"attack": acfg.name, "replicas": replicas, **traj})
        ctx.progress(1, 2 if an.landscape else 1, message="trajectory done")
    if an.landscape:
        radius = an.landscape_radius or 2 * acfg.eps
        land = loss_landscape(model, x, y, uids, radius=radius, grid=an.landscape_grid, dims=an.landscape_dims,
                              fixed_seed=ctx.seed("landscape", "fixed"),
                              fresh_seed=lambda i: ctx.seed("landscape", "fresh", i))
        summary["landscape"] = ctx.write_json("analysis/landscape.json",
                                              {"attack": acfg.name, "radius": radius, **land})
        ctx.progress(2 if an.trajectory else 1, 2 if an.trajectory else 1, message="landscape done")
    return summary
