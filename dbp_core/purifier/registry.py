"""The purifier's option names, each spelled once (docs/design.md, "Registries").

Light on purpose — no torch — so that ``dbp_core.config`` validates ``[purifier]`` against
these lists without importing the purifier itself.
"""
SAMPLERS = ("ddpm", "ddim", "vpsde", "vpode")
DISCRETE_SAMPLERS = ("ddpm", "ddim")  # reverse steps at the model's timesteps (respaced); the others: VP-SDE time
GRAD_MODES = ("none", "full", "checkpoint", "segments")
RESPACINGS = ("t_star", "global")  # ddpm/ddim steps spread over 0..t* T - 1, or over all T (guided-diffusion's)
VARIANCES = ("fixed_large", "fixed_small", "learned")
GUIDANCE_TARGETS = ("noised", "clean")  # GDMP's guidance target: the input re-noised to each step, or as is
PRECISIONS = ("fp32", "bf16", "tf32")  # the noise network's arithmetic: float32, bfloat16 autocast, TF32 matmuls (CUDA)
# the largest purifier.memory_budget in GB (1 PiB, beyond any machine): its byte count stays a finite integer
MAX_MEMORY_BUDGET = float(2 ** 20)
