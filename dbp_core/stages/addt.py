"""The ``addt`` stage of ``dbp run``: fine-tune the configured diffusion model
with ADDT (and, with ``addt.control``, the lambda = 0 control on the same
batches, timesteps and noise), checkpointing through the run store, then save
each fine-tuned model in the format it was loaded from under
``<run>/models/<variant>/``. A later ``attacks`` stage evaluates the original
and every variant on the same examples and seeds."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from types import SimpleNamespace

from .. import dist
from ..addt.cgpo import CGPOSettings
from ..addt.trainer import ADDTTrainer, TrainSettings
from ..purifier.diffusion import linear_schedule
from .context import StageContext
from .registry import ADDT_MODEL, CONTROL_MODEL

CHECKPOINT_EVERY = 25  # steps; a checkpoint holds model, EMA and optimiser state


def variants(cfg) -> list[tuple[str, CGPOSettings]]:
    s = CGPOSettings.from_config(cfg.addt)
    out = [(ADDT_MODEL, s)]
    if cfg.addt.control:
        out.append((CONTROL_MODEL, dataclasses.replace(s, multiplier=0.0, mapping="rbgm")))
    return out


def save_like_source(model, dest: Path) -> Path:
    """Save an eps model in the format it came in: a diffusers folder for a wrapped
    UNet2DModel, our safetensors + json checkpoint for our UNet."""
    from ..models.loaders import DiffusersEps, save_checkpoint
    from ..models.unet import UNet
    dest.mkdir(parents=True, exist_ok=True)
    if isinstance(model, DiffusersEps):
        model.unet.save_pretrained(str(dest), safe_serialization=True)
        return dest
    if isinstance(model, UNet):
        return save_checkpoint(model, dest / "eps_model", "unet", model.config.to_dict(), {"trained_by": "addt"})
    raise TypeError(f"cannot save a {type(model).__name__}: ADDT saves our UNet or a diffusers UNet2DModel")


@dist.all_ranks
def run(ctx: StageContext) -> dict:
    cfg, res = ctx.cfg, ctx.resources
    a = cfg.addt
    base = res.eps_model()
    if base is None:
        raise ValueError("stage 'addt' fine-tunes a diffusion model: models.diffusion must not be 'none'")
    full = res.full_dataset("train")
    device = res.device
    train = SimpleNamespace(x=full.x.float().to(device), y=full.y.long().to(device), uids=full.uids.long().to(device))
    schedule = linear_schedule()
    t_max = schedule.num_steps if a.t_range == "full" else schedule.steps_for(cfg.purifier.t_star)
    hflip = a.hflip if a.hflip is not None else cfg.data.dataset == "cifar10"
    settings = TrainSettings.from_config(a, t_max, hflip)
    state = ctx.load_checkpoint() or {"finished": {}, "current": None}
    todo = variants(cfg)
    total = a.steps * len(todo)
    summary = {}
    for n_done, (label, s) in enumerate(todo):
        if label in state["finished"]:
            summary[label] = state["finished"][label]
            continue
        trainer = ADDTTrainer(copy.deepcopy(base).to(device), res.classifier(), train,
                              schedule.alpha_bar, s, settings, seed=ctx.seed("train"))
        if state["current"] and state["current"]["label"] == label:
            trainer.load_state_dict(state["current"]["trainer"])
            ctx.log(f"{label}: resuming at step {trainer.step}")
        while trainer.step < a.steps:
            stats = trainer.train_step()
            ctx.metric("addt_step", stats["step"], variant=label, **{k: v for k, v in stats.items() if k != "step"})
            if trainer.step % CHECKPOINT_EVERY == 0 or trainer.step == a.steps:
                state["current"] = {"label": label, "trainer": trainer.state_dict()}
                ctx.save_checkpoint(state, tensors=True)
            ctx.progress(n_done * a.steps + trainer.step, total, message=f"ADDT {label}")
        folder = ctx.artifact_path(f"models/{label}")
        path = save_like_source(trainer.evaluation_model(), folder)
        ctx.record_artifact(f"models/{label}")  # verified on resume, before the attacks stage loads it
        # relative to the run folder: a moved or copied run loads its own model, not the original's
        state["finished"][label] = summary[label] = {"model": path.relative_to(folder.parent.parent).as_posix(),
                                                     "steps": trainer.step, "multiplier": s.multiplier}
        state["current"] = None
        ctx.save_checkpoint(state, tensors=True)
    return {"variants": summary, "t_max": t_max, "hflip": hflip}
