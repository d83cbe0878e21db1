"""ADDT — adversarial denoising diffusion training (the paper's §5; docs/science.md, "ADDT").

* ``cgpo.py``: classifier-guided perturbation optimisation with RBGM (``ops.rbgm``).
* ``trainer.py``: the fine-tuning loop (AdamW, warm-up, clip, EMA), reproducible per step.

The ``addt`` stage of ``dbp run`` (fine-tune, save, compare) is ``dbp_core/stages/addt.py``.
"""
from .cgpo import CGPOSettings, cgpo, lambda_t, mixed_noise
from .trainer import ADDTTrainer, TrainSettings, denoising_loss_under_cgpo

__all__ = ["ADDTTrainer", "CGPOSettings", "TrainSettings", "cgpo", "denoising_loss_under_cgpo", "lambda_t",
           "mixed_noise"]
