"""Built-in datasets and checkpoint formats, each spelled once (docs/design.md, "Registries").

Light on purpose — no torch, numpy or scikit-learn — so that ``dbp_core.config`` validates
``[data]`` and ``[models]`` against these lists; ``tests/test_data.py`` checks the split sizes
against the loaders, ``tests/test_checkpoints.py`` the architecture names and keys against the
networks.
"""
DATASETS = ("digits", "cifar10", "imagenet")
CHANNELS = {"digits": 1, "cifar10": 3, "imagenet": 3}
IMAGE_SIZES = {"digits": 8, "cifar10": 32}  # height = width; imagenet's is data.image_size
CLASSES = {"digits": 10, "cifar10": 10, "imagenet": 1000}
SPLIT_SIZES = {"digits": {"train": 1437, "val": 160, "test": 200}, "cifar10": {"train": 50000, "test": 10000},
               "imagenet": {"train": 1281167, "test": 50000}}  # imagenet 'test' = the labelled val set
SPLITS = ("train", "val", "test")

CLASSIFIER_FORMATS = ("auto", "dbp", "robustbench", "torchvision")
DIFFUSION_FORMATS = ("auto", "dbp", "diffusers", "guided-diffusion", "score-sde")

# Architectures of a checkpoint family (models/loaders.py); the first is the family's default.
CLASSIFIER_ARCHS = {
    "robustbench": ("wrn-28-10", "wrn-70-16", "wrn-70-16-dropout", "dm-wrn-28-10", "dm-wrn-70-16"),
    "torchvision": ("resnet50", "resnet18", "resnet34", "resnet101", "resnet152"),
}
DIFFUSION_ARCHS = {
    "guided-diffusion": ("256x256_diffusion_uncond", "lsun_256"),
    "score-sde": ("cifar10_ddpmpp_deep_continuous", "cifar10_ddpmpp_continuous"),
}
# Fields of models.diffusion_config: the family's own names (guided-diffusion's create_model flags,
# score_sde's config.model / config.data fields).
DIFFUSION_CONFIG_KEYS = {
    "guided-diffusion": ("image_size", "num_channels", "num_res_blocks", "channel_mult", "learn_sigma",
                         "attention_resolutions", "num_heads", "num_head_channels", "num_heads_upsample",
                         "use_scale_shift_norm", "dropout", "resblock_updown", "use_fp16",
                         "use_new_attention_order", "in_channels", "class_cond"),
    "score-sde": ("image_size", "num_channels", "nf", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout",
                  "skip_rescale", "centered", "sigma_min", "sigma_max", "num_scales"),
}
# Which weights of a score_sde training checkpoint ({'model', 'ema', 'optimizer', 'step'}): the EMA
# shadow parameters (DiffPure's choice, the default) or the raw training weights.
DIFFUSION_WEIGHTS = ("ema", "model")
