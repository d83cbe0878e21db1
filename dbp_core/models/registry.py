"""Built-in datasets and checkpoint formats, each spelled once (docs/design.md, "Registries").

Light on purpose — no torch, numpy or scikit-learn — so that ``dbp_core.config`` validates
``[data]`` and ``[models]`` against these lists; ``tests/test_data.py`` checks the split sizes
against the loaders.
"""
DATASETS = ("digits", "cifar10")
CHANNELS = {"digits": 1, "cifar10": 3}
SPLIT_SIZES = {"digits": {"train": 1437, "val": 160, "test": 200}, "cifar10": {"train": 50000, "test": 10000}}
SPLITS = ("train", "val", "test")

CLASSIFIER_FORMATS = ("auto", "dbp", "robustbench")
DIFFUSION_FORMATS = ("auto", "dbp", "diffusers")
