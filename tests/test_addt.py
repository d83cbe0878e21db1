"""ADDT: CGPO with RBGM, lambda_t, reproducible training steps, and the stage."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dbp_core import ops
from dbp_core.addt import ADDTTrainer, CGPOSettings, TrainSettings, cgpo, lambda_t
from dbp_core.addt.cgpo import guidance_loss
from dbp_core.purifier import noise
from dbp_core.purifier.diffusion import linear_schedule

from ._tiny import TinyEps
from .conftest import addt_toml

AB = linear_schedule().alpha_bar


def tiny_classifier(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


def tiny_data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(x=torch.rand(n, 1, 8, 8, generator=g), y=torch.randint(0, 10, (n,), generator=g),
                           uids=torch.arange(1000, 1000 + n))


def test_lambda_t_formula_and_clamp():
    ab = torch.tensor([0.9999, 0.99, 0.5, 0.01, 1e-5], dtype=torch.float64)
    got = lambda_t(ab, 0.03, 0.3)
    for a, v in zip(ab.tolist(), got.tolist()):
        assert v == pytest.approx(min(0.3, 0.03 * math.sqrt(a) / math.sqrt(1 - a)))
    assert got[0] == 0.3  # 0.03 * sqrt(0.9999 / 0.0001) = 2.99: clamped
    assert got[-1] < 1e-3
    assert lambda_t(ab, 0.0, 0.3).eq(0).all()


def test_cgpo_delta_is_rbgm_of_the_accumulated_gradient():
    eps_model, clf = TinyEps(dtype=torch.float32), tiny_classifier()
    d = tiny_data(6)
    x0, t, uids = d.x * 2 - 1, torch.tensor([5, 50, 100, 300, 600, 900]), d.uids
    s = CGPOSettings(multiplier=0.3, iterations=1)
    res = cgpo(eps_model, clf, x0, d.y, t, uids, AB[t], 7, s)
    # independently: the gradient at delta_0 with the iteration's eps
    delta0 = ops.normal(x0.shape, 7, noise.stream(noise.ADDT_DELTA), uids, 0).requires_grad_()
    eps = ops.normal(x0.shape, 7, noise.stream(noise.ADDT_NOISE), uids, 1)
    g = torch.autograd.grad(guidance_loss(eps_model, clf, x0, d.y, t, AB[t], eps, delta0, s).sum(), delta0)[0]
    z = ops.normal(x0.shape, 7, noise.stream(noise.ADDT_DELTA), uids, 1)
    for row_d, row_g, row_z in zip(res.delta.view(-1, 64), g.view(-1, 64), z.view(-1, 64)):
        assert torch.equal(torch.sort(row_d).values, torch.sort(row_z).values)  # a sorted Gaussian sample
        assert torch.equal(torch.argsort(row_d, stable=True), torch.argsort(row_g, stable=True))  # in g's order


def test_cgpo_increases_the_classifier_loss_over_a_random_delta():
    torch.manual_seed(0)
    eps_model, clf = TinyEps(dtype=torch.float32), tiny_classifier(1)
    d = tiny_data(32, seed=2)
    x0, uids = d.x * 2 - 1, d.uids
    t = torch.full((32,), 200)
    s = CGPOSettings(multiplier=0.5, clamp=0.9, iterations=5)
    delta = cgpo(eps_model, clf, x0, d.y, t, uids, AB[t], 11, s).delta
    random = ops.normal(x0.shape, 99, 0, uids, 0)
    eps = ops.normal(x0.shape, 123, 0, uids, 0)  # noise CGPO never saw
    with torch.no_grad():
        after = guidance_loss(eps_model, clf, x0, d.y, t, AB[t], eps, delta, s).mean()
        before = guidance_loss(eps_model, clf, x0, d.y, t, AB[t], eps, random, s).mean()
    assert after > before


def make_trainer(seed=3, **cgpo_kw):
    torch.manual_seed(0)
    s = CGPOSettings(**{"multiplier": 0.3, "iterations": 2, **cgpo_kw})
    ts = TrainSettings(batch_size=8, lr=1e-3, warmup_steps=2, ema=True, t_max=1000)
    return ADDTTrainer(TinyEps(dtype=torch.float32), tiny_classifier(), tiny_data(), AB, s, ts, seed=seed)


def params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_training_step_is_bit_identical_when_repeated_and_after_resume(tmp_path):
    a = make_trainer()
    stats_a = [a.train_step() for _ in range(3)]
    b = make_trainer()
    b.train_step()
    torch.save(b.state_dict(), tmp_path / "ckpt.pt")
    c = make_trainer()
    c.load_state_dict(torch.load(tmp_path / "ckpt.pt"))
    stats_c = [c.train_step() for _ in range(2)]
    assert torch.equal(params(a.model), params(c.model))
    assert torch.equal(params(a.ema), params(c.ema))
    assert stats_a[1:] == stats_c
    # a different seed trains differently
    d = make_trainer(seed=4)
    for _ in range(3):
        d.train_step()
    assert not torch.equal(params(a.model), params(d.model))


@pytest.mark.parametrize("kw", [{"guidance": "mse"}, {"mapping": "linf-pgd"}, {"multiplier": 0.0}])
def test_ablations_train(kw):
    tr = make_trainer(**kw)
    st = tr.train_step()
    assert math.isfinite(st["loss"])
    assert ("cgpo_loss_init" in st) == (kw.get("multiplier", 0.3) > 0 or kw.get("mapping") == "linf-pgd")


def test_linf_pgd_mapping_respects_its_clip():
    eps_model, clf = TinyEps(dtype=torch.float32), tiny_classifier()
    d = tiny_data(4)
    t = torch.tensor([10, 100, 500, 900])
    s = CGPOSettings(mapping="linf-pgd", iterations=4, pgd_step=4 / 255, pgd_eps=8 / 255)
    delta = cgpo(eps_model, clf, d.x * 2 - 1, d.y, t, d.uids, AB[t], 1, s).delta
    assert delta.abs().max() <= 2 * 8 / 255 + 1e-7 and delta.abs().max() > 0


def test_addt_stage_trains_saves_and_compares_variants(tmp_path):
    from dbp_core.config import loads_config
    from dbp_core.models.loaders import load_checkpoint
    from dbp_core.runner import run_study
    from dbp_core.store import RunStore

    cfg = loads_config(addt_toml(), base_dir=str(tmp_path))
    run = RunStore(tmp_path / "runs").create(cfg)
    assert run_study(run, cfg) == "done", run.read_log_tail(40)
    res = run.read_results()
    variants = res["stages"]["addt"]["variants"]
    assert set(variants) == {"addt", "control"} and variants["control"]["multiplier"] == 0.0
    # saved back in our own format, and different from each other
    assert variants["addt"]["model"] == "models/addt/eps_model.json"  # relative to the run folder
    a = load_checkpoint(run.path / variants["addt"]["model"])
    c = load_checkpoint(run.path / variants["control"]["model"])
    assert not torch.equal(params(a), params(c))
    models = {row["model"] for row in res["accuracies"]}
    assert models == {"original", "addt", "control"}
    whats = {c["what"] for c in res["comparisons"]}
    assert {"addt vs original", "addt vs control", "control vs original"} <= whats
    steps = [m for m in run.metrics().read() if m["kind"] == "addt_step"]
    assert len(steps) == 6 and {m["variant"] for m in steps} == {"addt", "control"}
    assert all("cgpo_loss_init" in m for m in steps if m["variant"] == "addt")


def test_cgpo_accumulates_gradients_across_iterations():
    """K = 2: the final delta is RBGM of g_1 + g_2, where g_2 is taken at delta_1 = RBGM(g_1)
    (docs/science.md, "CGPO": the accumulator is never reset)."""
    eps_model, clf = TinyEps(dtype=torch.float32), tiny_classifier()
    d = tiny_data(5)
    x0, t, uids = d.x * 2 - 1, torch.tensor([5, 80, 300, 600, 900]), d.uids
    s = CGPOSettings(multiplier=0.3, iterations=2)
    res = cgpo(eps_model, clf, x0, d.y, t, uids, AB[t], 7, s)
    dstream, estream = noise.stream(noise.ADDT_DELTA), noise.stream(noise.ADDT_NOISE)

    def grad_at(delta, k):
        delta = delta.detach().requires_grad_()
        eps = ops.normal(x0.shape, 7, estream, uids, k)
        return torch.autograd.grad(guidance_loss(eps_model, clf, x0, d.y, t, AB[t], eps, delta, s).sum(), delta)[0]

    g1 = grad_at(ops.normal(x0.shape, 7, dstream, uids, 0), 1)
    g2 = grad_at(ops.rbgm(g1, 7, dstream, uids, 1), 2)
    assert torch.equal(res.delta, ops.rbgm(g1 + g2, 7, dstream, uids, 2))
    assert not torch.equal(res.delta, ops.rbgm(g2, 7, dstream, uids, 2))  # a reset accumulator differs


def test_addt_lowers_the_denoising_loss_under_cgpo_on_the_embedded_default():
    """The mechanism of the paper's second claim, on the shipped digits DDPM and classifier:
    after ADDT fine-tuning the model removes CGPO perturbations (CGPO run against the model
    itself, on held-out noise) better than the original model and better than the lambda = 0
    control trained on the same batches, timesteps and noise."""
    import copy

    from dbp_core.addt.trainer import denoising_loss_under_cgpo
    from dbp_core.models import zoo
    from dbp_core.models.datasets import load_dataset
    from dbp_core.models.normalized import Normalized
    d = load_dataset("digits", "train")
    data = SimpleNamespace(x=d.x.float(), y=d.y.long(), uids=d.uids.long())
    clf = Normalized(zoo.default_classifier("digits"), *zoo.default_normalisation("digits")).eval()
    base = zoo.default_diffusion("digits")
    s = CGPOSettings(multiplier=0.3, iterations=5)
    t_max = 100  # the purification range of t* = 0.1
    models = {"original": base}
    for name, settings in (("addt", s), ("control", CGPOSettings(multiplier=0.0, iterations=5))):
        tr = ADDTTrainer(copy.deepcopy(base), clf, data, AB, settings,
                         TrainSettings(batch_size=32, lr=5e-4, warmup_steps=10, t_max=t_max, ema=False), seed=0)
        for _ in range(100):
            tr.train_step()
        models[name] = tr.evaluation_model()
    loss = {k: denoising_loss_under_cgpo(m, clf, data, AB, s, t_max, seed=5, batches=4, batch_size=64)
            for k, m in models.items()}
    assert loss["addt"] < loss["original"] and loss["addt"] < loss["control"], loss


def _stage_run(tmp_path, text, name="r"):
    from dbp_core.config import loads_config
    from dbp_core.store import RunStore
    cfg = loads_config(text, base_dir=str(tmp_path))
    return cfg, RunStore(tmp_path / name).create(cfg)


def test_addt_stage_resumes_bit_identically_through_the_run_store(tmp_path, monkeypatch):
    import signal

    from dbp_core.models.loaders import load_checkpoint
    from dbp_core.runner import Interrupted, run_study
    from dbp_core.stages import addt as stage
    text = addt_toml(stages=["addt"], addt={"steps": 4})
    cfg, plain = _stage_run(tmp_path, text, "plain")
    assert run_study(plain, cfg) == "done"
    monkeypatch.setattr(stage, "CHECKPOINT_EVERY", 1)
    cfg, run = _stage_run(tmp_path, text, "cut")
    original_step, calls = ADDTTrainer.train_step, []

    def interrupt_once(self):  # the 3rd step of the control variant: after addt finished, mid-control
        calls.append(1)
        if len(calls) == 7:
            raise Interrupted(signal.SIGINT)
        return original_step(self)
    monkeypatch.setattr(ADDTTrainer, "train_step", interrupt_once)
    assert run_study(run, cfg) == "interrupted"
    monkeypatch.setattr(ADDTTrainer, "train_step", original_step)
    assert run_study(run, run.read_config()) == "done"
    for variant in ("addt", "control"):
        a = load_checkpoint(plain.path / plain.read_results()["stages"]["addt"]["variants"][variant]["model"])
        b = load_checkpoint(run.path / run.read_results()["stages"]["addt"]["variants"][variant]["model"])
        assert torch.equal(params(a), params(b)), variant
    steps = [(m["variant"], m["step"]) for m in run.metrics().read() if m["kind"] == "addt_step"]
    assert steps.count(("control", 2)) == 1  # resumed at the step after the last checkpoint


def test_addt_on_a_diffusers_unet_saves_a_diffusers_folder(tmp_path):
    pytest.importorskip("diffusers")
    from diffusers import UNet2DModel

    from dbp_core.models.loaders import load_diffusers_unet
    from dbp_core.runner import run_study
    from tests.test_models import _tiny_diffusers
    _tiny_diffusers().save_pretrained(tmp_path / "ddpm")
    text = addt_toml(stages=["addt"], models={"diffusion": "ddpm", "diffusion_format": "diffusers"},
                     addt={"control": False})
    cfg, run = _stage_run(tmp_path, text)
    assert run_study(run, cfg) == "done", run.read_log_tail(30)
    folder = run.path / run.read_results()["stages"]["addt"]["variants"]["addt"]["model"]
    assert folder == run.path / "models" / "addt" and (folder / "config.json").is_file()
    tuned = UNet2DModel.from_pretrained(folder)
    before = UNet2DModel.from_pretrained(tmp_path / "ddpm")
    assert not torch.equal(params(tuned), params(before))
    x, t = torch.rand(2, 1, 8, 8), torch.tensor([3, 50])
    assert torch.equal(load_diffusers_unet(folder)(x, t), load_diffusers_unet(folder)(x, t))
