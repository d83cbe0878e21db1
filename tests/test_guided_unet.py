"""Our guided-diffusion UNet against openai's own ``UNetModel`` (guided-diffusion-sdk, the test
extra): a reference network with random weights, saved as a state dict and loaded through our
loader, gives the reference's outputs (float64, learned-variance channels included); the
256x256_diffusion_uncond preset has the released checkpoint's keys and shapes."""
from __future__ import annotations

import warnings

import pytest
import torch

from dbp_core.models.guided_unet import PRESETS, GuidedDiffusionEps, GuidedUNet, guided_config
from dbp_core.models.loaders import CheckpointError, check_model, load_model_file, model_spec

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the sdk's torch.cuda.amp decorators warn on import
    from guided_diffusion.nn import GroupNorm32 as RefGroupNorm32
    from guided_diffusion.script_util import create_model, model_and_diffusion_defaults

SMALL = [  # small configs of the same class: legacy / new attention order, scale-shift or bias, resblock or conv resampling
    dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", learn_sigma=True,
         attention_resolutions="8,4", num_head_channels=16, resblock_updown=True, use_scale_shift_norm=True),
    dict(image_size=16, num_channels=32, num_res_blocks=2, channel_mult="1,1,2", learn_sigma=False,
         attention_resolutions="8", num_heads=2, num_head_channels=-1, num_heads_upsample=1, resblock_updown=False,
         use_scale_shift_norm=False, use_new_attention_order=True),
]


def reference(flags: dict, seed: int = 0) -> torch.nn.Module:
    """openai's UNetModel (create_model's defaults, then ``flags``) with non-trivial random weights."""
    args = {k: v for k, v in model_and_diffusion_defaults().items() if k in create_model.__code__.co_varnames}
    torch.manual_seed(seed)
    net = create_model(**{**args, **flags})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():  # norm scales near 1, everything else (zero-init convs too) random
            scale = 1.0 if name.endswith("weight") and p.dim() == 1 else 0.0
            p.copy_(scale + 0.1 * torch.randn(p.shape, generator=g))
    return net.eval()


def reference_float64(net: torch.nn.Module) -> torch.nn.Module:
    """The reference in float64. Its own code runs the torso in ``self.dtype`` and its GroupNorm32 in
    float32 with float32 affine parameters (as under fp16); its float32 time embedding meets the
    first Linear through a cast."""
    net = net.double()
    net.dtype = torch.float64
    for m in net.modules():
        if isinstance(m, RefGroupNorm32):
            m.float()
    net.time_embed.register_forward_pre_hook(lambda _m, args: (args[0].double(),))
    return net


@pytest.mark.parametrize("flags", SMALL)
def test_loaded_state_dict_gives_the_reference_outputs(flags, tmp_path):
    ref = reference(flags)
    path = tmp_path / "unet.pt"
    torch.save(ref.state_dict(), path)
    eps_model = load_model_file(path, "diffusion", "guided-diffusion", config=flags)
    assert isinstance(eps_model, GuidedDiffusionEps) and not eps_model.training
    assert eps_model.learned_variance is flags["learn_sigma"] and eps_model.continuous_time is False
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 377, 999])
    with torch.no_grad():
        assert torch.equal(eps_model(x, t), ref(x, t))  # float32: the same arithmetic
        ref64, ours64 = reference_float64(ref), eps_model.double()
        want, got = ref64(x.double(), t), ours64(x.double(), t)
    assert got.shape == (3, 6 if flags["learn_sigma"] else 3, 16, 16)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert want.abs().max() > 0.1  # non-trivial outputs (the variance channels too, when learned)


def test_fp16_torso_matches_convert_to_fp16():
    flags = {**SMALL[0], "use_fp16": True}
    ref = reference(flags)
    sd = ref.state_dict()
    ref.convert_to_fp16()
    ours = GuidedUNet(guided_config(None, flags))
    ours.load_state_dict(sd)
    assert {n for n, p in ours.named_parameters() if p.dtype == torch.float16} == \
        {n for n, p in ref.named_parameters() if p.dtype == torch.float16}
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 600])
    with torch.no_grad():
        assert torch.equal(ours(x, t), ref(x, t))


def test_256x256_uncond_preset_matches_the_release_layout():
    flags = {k: v for k, v in model_and_diffusion_defaults().items() if k in create_model.__code__.co_varnames}
    # the flags of the released checkpoint (guided-diffusion README, DiffPure's configs/imagenet.yml)
    flags.update(attention_resolutions="32,16,8", class_cond=False, image_size=256, learn_sigma=True, num_channels=256,
                 num_head_channels=64, num_res_blocks=2, resblock_updown=True, use_fp16=False, use_scale_shift_norm=True)
    with torch.device("meta"):
        ref = create_model(**flags)
        ours = GuidedUNet(guided_config("256x256_diffusion_uncond"))
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == want
    assert len(got) == 566 and sum(p.numel() for p in ours.parameters()) == 552_814_086
    assert ours.config.out_channels == 6


def test_presets_and_config_errors():
    assert set(PRESETS) == {"256x256_diffusion_uncond", "lsun_256"}
    with pytest.raises(ValueError, match="unknown guided-diffusion flag.*num_chanels"):
        guided_config(None, {"num_chanels": 3})
    with pytest.raises(ValueError, match="unknown guided-diffusion preset 'lsun_128'"):
        guided_config("lsun_128")
    assert guided_config("lsun_256", {"num_res_blocks": 1}).dropout == 0.1  # the preset, then the override
    assert guided_config("lsun_256", {"num_res_blocks": 1}).num_res_blocks == 1
    with pytest.raises(ValueError, match="class-conditional"):
        guided_config("256x256_diffusion_uncond", {"class_cond": True})
    with pytest.raises(ValueError, match="image_size"):
        guided_config(None, {"image_size": 48})
    with pytest.raises(CheckpointError, match="models.diffusion_config: .*unknown guided-diffusion flag"):
        check_model(model_spec("x.pt", "diffusion", "guided-diffusion", config={"bogus": 1}))


def test_timesteps_are_passed_as_the_full_models(tmp_path):
    """guided-diffusion's _WrappedModel for the full 1000-step model with rescale_timesteps passes
    float(t) * 1000 / 1000; without it, t itself: the wrapper's int timesteps give both."""
    ref = reference(SMALL[0])
    eps_model = GuidedDiffusionEps(GuidedUNet(guided_config(None, SMALL[0])))
    eps_model.unet.load_state_dict(ref.state_dict())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([17, 640])
    with torch.no_grad():
        assert torch.equal(eps_model(x, t), ref(x, t.float() * (1000.0 / 1000)))
        assert torch.equal(eps_model(x, torch.tensor(640)), ref(x, torch.tensor([640, 640])))  # a scalar t: every row
