"""The trainer: loss goes down, exact resume, stop conditions, export that scan loads, CLI."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch
from helpers import textured_photo
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from imlscan.cli import app
from imlscan.device import cpu_has_native_bf16
from imlscan.errors import ImlscanError, UsageError
from imlscan.train.config import MAX_BAD_STEPS_IN_A_ROW, TrainConfig, load_run_config
from imlscan.train.stream import StepSampler, TrainStream, build_sources, parse_synth_spec
from imlscan.train.trainer import (
    Trainer,
    apply_update,
    lr_at,
    param_groups,
    selection_score,
    sizing_window_done,
    train,
)

runner = CliRunner()


@pytest.fixture
def hosts(tmp_path, rng):
    d = tmp_path / "hosts"
    d.mkdir()
    for i in range(30):
        Image.fromarray(textured_photo(rng, 60, 80)).save(d / f"h{i:02d}.png")
    return d


@pytest.fixture
def one_pair(tmp_path, rng):
    """A real dataset of one forged image: every batch is the same (a fixed batch)."""
    d = tmp_path / "real"
    d.mkdir()
    img = textured_photo(rng, 64, 64)
    img[16:40, 20:48] = 255 - img[16:40, 20:48]  # an obvious 'forgery'
    mask = np.zeros((64, 64), np.uint8)
    mask[16:40, 20:48] = 255
    Image.fromarray(img).save(d / "a.png")
    Image.fromarray(mask).save(d / "a_gt.png")
    (d / "pairs.json").write_text(json.dumps([["a.png", "a_gt.png"]]))
    return d / "pairs.json"


def _cfg(tmp_path, run_name, data, **kw) -> TrainConfig:
    base = dict(
        data=data,
        out=str(tmp_path / run_name),
        model="sparsevit-test",
        size=64,
        batch_size=2,
        lr=1e-3,
        precision="fp32",
        device="cpu",
        workers=0,
        log_every=1,
        val_every=1000,
        val_samples=4,
    )
    base.update(kw)
    return TrainConfig(**base)


def _train_losses(run_dir) -> dict[int, float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["type"] == "train"}


def test_loss_goes_down_on_a_fixed_batch(tmp_path, one_pair):
    cfg = _cfg(tmp_path, "fit", [str(one_pair)], max_steps=30, augment=False, val=["none"], warmup=3)
    summary = train(cfg)
    losses = _train_losses(tmp_path / "fit")
    assert summary["steps"] == 30 and summary["stop_reason"] == "max_steps"
    assert len(losses) == 30
    first, last = np.mean([losses[s] for s in (1, 2, 3)]), np.mean([losses[s] for s in (28, 29, 30)])
    assert last < 0.7 * first, (first, last)
    assert all(math.isfinite(v) for v in losses.values())


def test_resume_reproduces_the_uninterrupted_run(tmp_path, hosts):
    data = [f"synth:{hosts}?negatives=0.3"]
    common = dict(schedule_steps=10, val_every=3, warmup=2, dice=0.5)
    train(_cfg(tmp_path, "full", data, max_steps=10, **common))
    train(_cfg(tmp_path, "split", data, max_steps=5, **common))
    assert sorted(_train_losses(tmp_path / "split")) == [1, 2, 3, 4, 5]
    # continue with a loader worker: data must not depend on who computes it
    resumed = load_run_config(tmp_path / "split", {"max_steps": 10, "workers": 1})
    train(resumed, resume=True)
    full, split = _train_losses(tmp_path / "full"), _train_losses(tmp_path / "split")
    assert sorted(split) == list(range(1, 11))
    assert [full[s] for s in range(1, 11)] == [split[s] for s in range(1, 11)]
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert a["state"]["step"] == b["state"]["step"] == 10
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for k in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][k]["exp_avg"], b["optimizer"]["state"][k]["exp_avg"])


def test_weight_average_moves_a_fixed_fraction_and_copies_counters(tiny_model):
    from imlscan.train.ema import WeightAverage

    avg = WeightAverage(tiny_model, 0.75)
    before = {k: v.clone() for k, v in avg.state_dict().items()}
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(1.0)
        for b in tiny_model.buffers():
            if b.is_floating_point():
                b.mul_(3.0)
            else:
                b.add_(7)
    avg.update(tiny_model)
    new = tiny_model.state_dict()
    n_int = 0
    for k, v in avg.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.75 * before[k] + 0.25 * new[k])
        else:
            n_int += 1
            assert torch.equal(v, new[k]), k
    assert n_int > 0  # BatchNorm's num_batches_tracked: copied, not averaged
    assert not any(p.requires_grad for p in avg.model.parameters()) and not avg.model.training
    with pytest.raises(ValueError):
        WeightAverage(tiny_model, 1.0)


def test_ema_run_validates_both_arms_and_resumes_the_average_exactly(tmp_path, hosts):
    data = [f"synth:{hosts}?negatives=0.3"]
    common = dict(schedule_steps=6, warmup=1, ema=0.5, val_every=3, val_samples=2)
    train(_cfg(tmp_path, "full", data, max_steps=6, **common))
    train(_cfg(tmp_path, "split", data, max_steps=3, **common))
    train(load_run_config(tmp_path / "split", {"max_steps": 6}), resume=True)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert a["state"]["step"] == b["state"]["step"] == 6
    for k, v in a["ema"].items():
        assert torch.equal(v, b["ema"][k]), k
    # the average lags the trained weights: it is a different model
    assert any(not torch.equal(a["ema"][k], a["model"][k]) for k in a["model"] if a["model"][k].is_floating_point())
    vals = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in vals if r["type"] == "val"]
    assert [r["step"] for r in vals] == [0, 3, 6]
    assert all("trained_pixel_auc" in r and "pixel_auc" in r for r in vals)
    # step 0: the average is the starting model, so both validations agree
    assert vals[0]["pixel_auc"] == vals[0]["trained_pixel_auc"]
    log = (tmp_path / "full" / "train.log").read_text()
    assert "val step 3, trained weights:" in log and "could not draw" not in log
    assert (tmp_path / "full" / "val.png").stat().st_size > 1000


def test_ema_without_validation_exports_the_average(tmp_path, one_pair):
    cfg = _cfg(tmp_path, "e", [str(one_pair)], max_steps=4, val=["none"], warmup=1, ema=0.9)
    train(cfg)
    ck = torch.load(tmp_path / "e" / "last.pt", weights_only=True)
    best = load_file(str(tmp_path / "e" / "best.safetensors"))
    for k, v in best.items():
        assert torch.equal(v, ck["ema"][k]), k
    assert any(not torch.equal(best[k], ck["model"][k]) for k in best if best[k].is_floating_point())
    from imlscan.models import create_model

    torch.manual_seed(0)  # the trainer's own initialization (seed 0): the average must have moved off it
    start = create_model("sparsevit-test").state_dict()
    assert any(not torch.equal(best[k], start[k]) for k in best if best[k].is_floating_point())
    with pytest.raises(UsageError, match="--ema"):
        _cfg(tmp_path, "bad", [str(one_pair)], max_steps=1, ema=1.0).check()


def test_export_loads_in_load_model_and_predictor(tmp_path, hosts):
    from imlscan.device import device_name
    from imlscan.scanning.predict import Predictor
    from imlscan.weights.store import load_model, read_metadata

    run = tmp_path / "exp"
    summary = train(
        _cfg(tmp_path, "exp", [f"synth:{hosts}"], max_steps=4, val_every=2, export_dtype="fp16", name="tiny-run")
    )
    assert summary["steps"] == 4 and summary["best_step"] in (2, 4)
    for f in ("best.safetensors", "last.pt", "config.json", "metrics.jsonl", "metrics.csv", "summary.json", "loss.png"):
        assert (run / f).is_file(), f
    meta = read_metadata(run / "best.safetensors")
    assert meta["name"] == "tiny-run" and meta["variant"] == "sparsevit-test"
    assert meta["preprocessing"]["size"] == 64 and meta["preprocessing"]["mode"] == "resize"
    assert meta["provenance"]["steps"] == summary["best_step"]
    assert meta["provenance"]["data"][0]["kind"] == "synth"
    assert set(meta["training"]["val_metrics"]) >= {"pixel_f1", "pixel_auc", "pixel_iou"}
    assert summary["hardware"] == meta["training"]["hardware"] == f"1 x {device_name(torch.device('cpu'))}"
    assert "logical cores" in summary["hardware"]
    assert all(t.dtype == torch.float16 for t in load_file(run / "best.safetensors").values() if t.is_floating_point())
    model = load_model(run / "best.safetensors", device="cpu")
    assert model.weights_info.trained and model.weights_info.preprocessing["size"] == 64
    prob = Predictor(model).predict_prob(textured_photo(np.random.default_rng(0), 50, 70))
    assert prob.shape == (50, 70) and prob.dtype == np.float32 and 0 <= prob.min() <= prob.max() <= 1
    # the validation curve has the untrained baseline (step 0) plus steps 2 and 4
    val_steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"val"' in x]
    assert val_steps == [0, 2, 4]


def test_max_minutes_stops_checkpoints_and_exports(tmp_path, hosts):
    summary = train(_cfg(tmp_path, "timed", [f"synth:{hosts}"], max_minutes=0.002, val=["none"]))
    assert summary["stop_reason"] == "max_minutes"
    assert (tmp_path / "timed" / "best.safetensors").is_file()
    ckpt = torch.load(tmp_path / "timed" / "last.pt", weights_only=True)
    assert ckpt["state"]["step"] == summary["steps"]


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16")
def test_bf16_autocast_trains_on_cpu(tmp_path, one_pair):
    summary = train(_cfg(tmp_path, "bf16", [str(one_pair)], max_steps=2, precision="bf16", val=["none"]))
    assert summary["precision"] == "bf16" and summary["steps"] == 2


def test_weight_decay_skips_norms_biases_and_gammas(tiny_model):
    decay, no_decay = param_groups(tiny_model, 0.05)
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert decayed and all(not n.endswith(".bias") and "norm" not in n and "gamma" not in n for n in decayed)
    assert {"head.gamma"} <= skipped and any(n.endswith("gamma_1") for n in skipped)
    assert len(decayed) + len(skipped) == len(list(tiny_model.parameters()))


def test_schedule_sizing_waits_for_steady_speed():
    """20 timed steps suffice only once the window also covers 5% of the budget (at most 60 s)."""
    assert not sizing_window_done(20, 0.8, 420.0)  # a 7-minute GPU run: 20 fast steps are not enough
    assert not sizing_window_done(500, 20.9, 420.0) and sizing_window_done(500, 21.0, 420.0)
    assert not sizing_window_done(19, 100.0, 420.0)  # never fewer than 20 steps
    assert not sizing_window_done(30, 59.0, 5400.0) and sizing_window_done(30, 60.0, 5400.0)  # capped at 60 s


def test_a_time_budget_sizes_the_schedule_once_the_window_is_done(tmp_path, one_pair, monkeypatch):
    """The loop asks sizing_window_done and sizes the cosine from the steps it timed (a short window
    here: the real one needs seconds of training)."""
    import imlscan.train.trainer as train_mod

    monkeypatch.setattr(train_mod, "SIZING_STEPS", (1, 3))
    monkeypatch.setattr(train_mod, "SIZING_WINDOW", (0.0, 0.0))
    summary = train(_cfg(tmp_path, "sized", [str(one_pair)], max_minutes=0.12, val=["none"], augment=False))
    log = (tmp_path / "sized" / "train.log").read_text()
    assert "schedule:" in log and summary["steps"] >= 3, log
    ckpt = torch.load(tmp_path / "sized" / "last.pt", weights_only=True)
    assert ckpt["state"]["total_steps"] >= 3

    monkeypatch.setattr(train_mod, "SIZING_WINDOW", (2.0, 1e9))  # a window longer than the run
    train(_cfg(tmp_path, "unsized", [str(one_pair)], max_minutes=0.03, val=["none"], augment=False))
    assert "schedule:" not in (tmp_path / "unsized" / "train.log").read_text()


def test_a_time_sized_cosine_is_refitted_at_each_validation(tmp_path, one_pair, monkeypatch):
    """The first sizing can be far off (on an H200 the first validation cost 4x the later ones and
    the cosine ended 18% early); each validation re-fits the cosine to the time left, so it ends
    near the end of the run instead of at a step the run passes long before."""
    import imlscan.train.trainer as train_mod

    monkeypatch.setattr(train_mod, "SIZING_STEPS", (1, 3))
    monkeypatch.setattr(train_mod, "SIZING_WINDOW", (0.0, 0.0))
    fitted = train_mod._estimate_total
    calls: list[tuple] = []

    def first_far_too_short(*args):
        calls.append(args)
        return args[0] + 2 if len(calls) == 1 else fitted(*args)

    monkeypatch.setattr(train_mod, "_estimate_total", first_far_too_short)

    class Clock:  # the trainer's clock, advancing 0.02 s per reading: the run's length no longer depends on load
        now = 0.0

        def monotonic(self) -> float:
            self.now += 0.02
            return self.now

        def __getattr__(self, name):
            return getattr(time, name)

    monkeypatch.setattr(train_mod, "time", Clock())
    cfg = _cfg(tmp_path, "refit", [str(one_pair)], max_minutes=0.08, val=[str(one_pair)], val_every=10, augment=False)
    summary = train(cfg)
    log = (tmp_path / "refit" / "train.log").read_text()
    assert "re-fitted" in log and len(calls) >= 2, log
    total = torch.load(tmp_path / "refit" / "last.pt", weights_only=True)["state"]["total_steps"]
    assert total >= 0.8 * summary["steps"] > 20, (total, summary["steps"])


def test_lr_schedule_warmup_then_cosine():
    kw = dict(lr=1e-3, min_lr=1e-5, warmup=10, total=110)
    assert lr_at(0, **kw) == pytest.approx(1e-4)
    assert lr_at(9, **kw) == pytest.approx(1e-3)
    assert lr_at(60, **kw) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(110, **kw) == pytest.approx(1e-5) and lr_at(500, **kw) == pytest.approx(1e-5)
    assert all(lr_at(s, **kw) >= lr_at(s + 1, **kw) for s in range(10, 120))


def test_sample_stream_is_sharded_without_overlap(hosts, tmp_path):
    per_rank = [next(iter(StepSampler(3, 4, rank=r, world=2))) for r in range(2)]
    assert per_rank == [[24, 25, 26, 27], [28, 29, 30, 31]]
    cfg = _cfg(tmp_path, "x", [f"synth:{hosts}", f"synth:{hosts}?negatives=1"], data_weights=[1, 3], max_steps=1)
    sources, implied = build_sources(cfg)
    stream = TrainStream(sources, cfg.data_weights, 64, 0)
    x, y = stream[7]
    assert x.shape == (3, 64, 64) and x.dtype == torch.uint8 and y.shape == (1, 64, 64)
    assert torch.equal(stream[7][0], x)  # pure function of the index
    picks = [int(np.random.default_rng([0, g, 7]).choice(2, p=stream.p)) for g in range(400)]
    assert 0.65 < np.mean(picks) < 0.85  # the second source has weight 3 of 4
    assert [v[0] for v in implied] == ["synth", "synth"]


def test_crop_is_a_window_of_the_resized_image(hosts, tmp_path):
    cfg = _cfg(tmp_path, "x", [f"synth:{hosts}"], max_steps=1)
    sources, _ = build_sources(cfg)
    whole, cropped = TrainStream(sources, None, 64, 0), TrainStream(sources, None, 64, 0, crop=32)
    origins = set()
    for g in range(12):
        (x, y), (cx, cy) = whole[g], cropped[g]
        assert cx.shape == (3, 32, 32) and cy.shape == (1, 32, 32)
        hits = [
            (i, j)
            for i in range(33)
            for j in range(33)
            if torch.equal(x[:, i : i + 32, j : j + 32], cx) and torch.equal(y[:, i : i + 32, j : j + 32], cy)
        ]
        assert hits, "the crop is not a window of the resized sample (image and mask together)"
        origins.add(hits[0])
        assert torch.equal(cropped[g][0], cx)  # same window for the same index: resumable
    assert len(origins) > 3  # windows move
    with pytest.raises(UsageError, match="--crop"):
        _cfg(tmp_path, "y", [f"synth:{hosts}"], max_steps=1, size=64, crop=96).check()


@pytest.mark.parametrize("select, best", [("f1", 1), ("best-f1", 2), ("auc", 3)])
def test_select_picks_the_best_checkpoint_by_the_chosen_metric(hosts, tmp_path, monkeypatch, select, best):
    # scripted validation numbers that disagree: F1 at 0.5 peaks at step 1, best-threshold F1 at 2, AUC at 3
    script = {1: (0.30, 0.40, 0.80), 2: (0.20, 0.50, 0.81), 3: (0.10, 0.45, 0.90)}

    def scripted(self):
        f1, f1_best, auc = script.get(self.state.step, (0.0, 0.0, 0.5))
        self.val_seconds = 0.0
        return {"pixel_f1": f1, "pixel_f1_best": f1_best, "pixel_auc": auc, "pixel_iou": 0.0, "authentic_fpr": 0.0}

    monkeypatch.setattr(Trainer, "validate", scripted)
    summary = train(_cfg(tmp_path, select, [f"synth:{hosts}"], max_steps=3, val_every=1, select=select))
    assert summary["best_step"] == best
    log = (tmp_path / select / "train.log").read_text()
    assert f"val step {best}: F1" in log and "best-threshold F1 0.5000" in log


def test_select_rejects_unknown_metrics_and_tolerates_nan(hosts, tmp_path):
    assert selection_score({"pixel_f1": math.nan, "pixel_auc": 0.7}) == pytest.approx(0.0007)
    assert selection_score({"pixel_f1": 0.2, "pixel_auc": math.nan}, "auc") == 0.0
    with pytest.raises(UsageError, match="--select"):
        _cfg(tmp_path, "z", [f"synth:{hosts}"], max_steps=1, select="iou").check()


def test_synth_spec_parsing(hosts):
    gen = parse_synth_spec(f"synth:{hosts}?negatives=0.5&kinds=1,0,0&area=0.02,0.2&post=0", seed=3, split="train")
    assert gen.config.negatives == 0.5 and gen.config.kinds == (1.0, 0.0, 0.0) and gen.config.post.jpeg == 0
    assert gen.seed == 3 and gen.config.forge_scale == 0.0
    scaled = parse_synth_spec(f"synth:{hosts}?forge_scale=0.5&host_resize=0.2", seed=3, split="train")
    assert scaled.config.forge_scale == 0.5 and scaled.config.host_resize == 0.2
    with pytest.raises(UsageError, match="forge_scale"):
        parse_synth_spec(f"synth:{hosts}?forge_scale=2", seed=0, split="train")
    with pytest.raises(UsageError, match="unknown option"):
        parse_synth_spec(f"synth:{hosts}?negativs=0.5", seed=0, split="train")
    with pytest.raises(UsageError):
        parse_synth_spec(f"synth:{hosts}?negatives=abc", seed=0, split="train")
    assert gen.config.area == (0.02, 0.2)
    for bad in ("area=0.02", "area=0.02,x", "kinds=1,0", "area=nan,0.2"):
        with pytest.raises(UsageError, match="comma-separated"):
            parse_synth_spec(f"synth:{hosts}?{bad}", seed=0, split="train")
    with pytest.raises(ImlscanError, match="not a folder"):
        parse_synth_spec("synth:/definitely/not/here", seed=0, split="train")
    assert parse_synth_spec(f"synth:{hosts}?host_resize=0.5", seed=0, split="train").config.host_resize == 0.5
    assert parse_synth_spec(f"synth:{hosts}?translate=0.6", seed=0, split="train").config.translate == 0.6
    with pytest.raises(UsageError, match="host_resize"):
        parse_synth_spec(f"synth:{hosts}?host_resize=2", seed=0, split="train")
    assert parse_synth_spec(f"synth:{hosts}?translate_objects=1", seed=0, split="train").config.translate_objects
    assert not parse_synth_spec(f"synth:{hosts}?translate_objects=off", seed=0, split="train").config.translate_objects
    assert parse_synth_spec(f"synth:{hosts}?post=on", seed=0, split="train").config.post.jpeg > 0
    for bad in ("translate_objects=maybe", "post=2"):
        with pytest.raises(UsageError, match="must be 1 or 0"):
            parse_synth_spec(f"synth:{hosts}?{bad}", seed=0, split="train")


def test_config_errors_are_usage_errors(tmp_path, one_pair):
    with pytest.raises(UsageError, match="--max-steps or --max-minutes"):
        train(_cfg(tmp_path, "e1", [str(one_pair)]))
    with pytest.raises(UsageError, match="data-weight"):
        train(_cfg(tmp_path, "e2", [str(one_pair)], data_weights=[1, 2], max_steps=1))
    with pytest.raises(UsageError, match="multiple of 32"):
        train(_cfg(tmp_path, "e3", [str(one_pair)], size=50, max_steps=1))
    with pytest.raises(UsageError, match="unknown --model"):
        train(_cfg(tmp_path, "e4", [str(one_pair)], model="resnet", max_steps=1, val=["none"]))


def test_auto_precision_trains_in_fp32_even_where_inference_would_use_bf16(tmp_path, one_pair):
    summary = train(_cfg(tmp_path, "auto", [str(one_pair)], max_steps=1, precision="auto", val=["none"]))
    assert summary["precision"] == "fp32" and summary["skipped_steps"] == 0


def test_a_non_finite_gradient_is_skipped_not_applied(tiny_model):
    opt = torch.optim.AdamW(tiny_model.parameters(), lr=1e-2)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    tiny_model(torch.rand(2, 3, 64, 64)).mean().backward()
    next(tiny_model.parameters()).grad[0] = math.nan  # one bad value poisons the clipped norm
    norm = torch.nn.utils.clip_grad_norm_(tiny_model.parameters(), 1.0)
    assert apply_update(opt, norm) is False
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())
    assert not opt.state and all(p.grad is None for p in tiny_model.parameters())

    tiny_model(torch.rand(2, 3, 64, 64)).mean().backward()
    assert apply_update(opt, torch.nn.utils.clip_grad_norm_(tiny_model.parameters(), 1.0)) is True
    assert any(not torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())


def test_a_diverged_model_stops_the_run_with_a_clear_error(tmp_path, one_pair, tiny_model):
    from imlscan.weights.store import save_weights

    with torch.no_grad():  # finite, so the weights gate lets it in, but every activation overflows:
        next(tiny_model.parameters()).fill_(3e38)  # every loss and gradient is NaN from step 1
    save_weights(tiny_model, tmp_path / "nan.safetensors", name="nan", variant="sparsevit-test")
    cfg = _cfg(tmp_path, "nan", [str(one_pair)], model=None, init=str(tmp_path / "nan.safetensors"))
    cfg.max_steps, cfg.val = 100, ["none"]
    with pytest.raises(ImlscanError, match=f"not finite for {MAX_BAD_STEPS_IN_A_ROW} steps in a row"):
        train(cfg)
    log = (tmp_path / "nan" / "train.log").read_text()
    assert log.count("update skipped") == MAX_BAD_STEPS_IN_A_ROW


def test_a_run_stopped_before_its_first_validation_exports_nothing_and_says_so(tmp_path, hosts):
    run = tmp_path / "short"
    args = ["train", "--data", f"synth:{hosts}", "--model", "sparsevit-test", "--size", "64", "--batch-size", "2"]
    # 60 microseconds: less than any validation takes, so the step-0 validation's time alone stops it
    args += ["--max-minutes", "0.000001", "--val-samples", "2", "--workers", "0", "--precision", "fp32"]
    res = runner.invoke(app, [*args, "--out", str(run)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "no weights exported" in res.output and f"--resume {run}" in res.output
    assert not (run / "best.safetensors").exists() and (run / "last.pt").is_file()
    assert json.loads((run / "summary.json").read_text())["best_weights"] is None


def test_init_from_weights_and_architecture_mismatch(tmp_path, one_pair, tiny_weights):
    summary = train(
        _cfg(tmp_path, "ft", [str(one_pair)], model=None, init=str(tiny_weights), max_steps=1, val=["none"])
    )
    assert summary["model"] == "sparsevit-test"
    with pytest.raises(UsageError, match="holds") as err:
        train(_cfg(tmp_path, "ft2", [str(one_pair)], model="sparsevit-t", init=str(tiny_weights), max_steps=1))
    assert "--model sparsevit-test-dup" in err.value.hint  # the one --model that would fit


def test_cli_train_resume_and_errors(tmp_path, hosts):
    run = tmp_path / "cli"
    args = ["train", "--data", f"synth:{hosts}", "--model", "sparsevit-test", "--size", "64", "--batch-size", "2"]
    args += ["--max-steps", "2", "--val-samples", "2", "--workers", "0", "--precision", "fp32", "--out", str(run)]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{") :])
    assert summary["steps"] == 2 and (run / "best.safetensors").is_file()

    res = runner.invoke(app, args)  # same folder again
    assert res.exit_code == 1 and "already holds a run" in res.output

    res = runner.invoke(app, ["train", "--resume", str(run), "--max-steps", "3", "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "summary.json").read_text())["steps"] == 3

    res = runner.invoke(app, ["train", "--resume", str(run), "--lr", "1"])
    assert res.exit_code == 2 and "cannot change when resuming" in res.output

    res = runner.invoke(
        app, ["train", "--data", "synth:/no/such/dir", "--max-steps", "1", "--out", str(tmp_path / "x")]
    )
    assert res.exit_code == 1 and "Traceback" not in res.output and "not a folder" in res.output

    res = runner.invoke(app, ["train", "--data", f"synth:{hosts}", "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "--max-steps or --max-minutes" in res.output


_RECORDING_LAUNCHER = """
import json, os, sys
import imlscan.train.trainer as t

real = t.mean_over_ranks


def recording(window, keys, device):
    out = real(window, keys, device)
    with open(os.environ["MEAN_LOG"] + "." + os.environ["RANK"], "a") as f:
        f.write(json.dumps({"in": {k: window[k] for k in keys}, "out": out}) + "\\n")
    return out


t.mean_over_ranks = recording
from imlscan.cli import main

sys.argv = ["imlscan", *sys.argv[1:]]
try:
    main()
finally:
    import torch.distributed as dist

    with open(os.environ["MEAN_LOG"] + ".left." + os.environ["RANK"], "w") as f:
        f.write(str(not dist.is_initialized()))
"""


def test_two_processes_under_torchrun_train_together(tmp_path, hosts):
    """The DistributedDataParallel path (gloo on the CPU): both ranks step in lockstep, log finite
    losses, only rank 0 writes (the weight average of ``--ema`` included), and the export loads.
    The launcher records what each rank passes to the loss averaging, so the test also checks that
    the trainer averages at every log step and that the logged loss is the pooled one (the
    averaging itself: the next test)."""
    import os
    import subprocess
    import sys

    run, launcher = tmp_path / "ddp", tmp_path / "launch.py"
    launcher.write_text(_RECORDING_LAUNCHER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(launcher)]
    cmd += ["train", "--data", f"synth:{hosts}", "--model", "sparsevit-test", "--size", "64"]
    cmd += ["--batch-size", "2", "--max-steps", "4", "--val-samples", "2", "--val-every", "2", "--log-every", "2"]
    cmd += ["--workers", "0", "--precision", "fp32", "--device", "cpu", "--out", str(run)]
    cmd += ["--ema", "0.5"]  # the weight average under DDP too: rank 0 validates both arms
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEAN_LOG": str(tmp_path / "mean")}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    for rank in (0, 1):  # each rank left the process group it joined before exiting
        assert (tmp_path / f"mean.left.{rank}").read_text() == "True"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["skipped_steps"] == 0
    assert summary["hardware"].startswith("2 x cpu")
    log = (run / "train.log").read_text()
    assert "batch 2 x 2 process(es)" in log and log.count("val step 4, trained weights:") == 1
    ck = torch.load(run / "last.pt", weights_only=True)
    assert any(not torch.equal(ck["ema"][k], v) for k, v in ck["model"].items() if v.is_floating_point())
    losses = _train_losses(run)
    assert sorted(losses) == [2, 4] and all(math.isfinite(v) and v > 0 for v in losses.values())
    calls = [[json.loads(x) for x in (tmp_path / f"mean.{r}").read_text().splitlines()] for r in (0, 1)]
    assert len(calls[0]) == len(calls[1]) == 2  # one averaging per log step, on both ranks
    for step, a, b in zip((2, 4), *calls):
        assert a["in"]["loss"] != b["in"]["loss"]  # the shards differ, so averaging matters
        pooled = (a["in"]["loss"] + b["in"]["loss"]) / (a["in"]["ok"] + b["in"]["ok"])
        assert losses[step] == pytest.approx(pooled, abs=2e-6)
    from imlscan.weights.store import load_model

    assert load_model(run / "best.safetensors", device="cpu").weights_info.trained


_MEAN_OVER_RANKS = """
import json, sys
import torch, torch.distributed as dist
from imlscan.train.dist import mean_over_ranks
rank, store = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
window = {"ok": [3, 1][rank], "loss": [3.0, 5.0][rank], "bce": [1.5, 0.5][rank], "dice": 0.0, "n": 9}
print(json.dumps(mean_over_ranks(window, ("ok", "loss", "bce", "dice"), torch.device("cpu"))))
dist.destroy_process_group()
"""


def test_logged_loss_is_the_mean_over_ranks(tmp_path):
    """Two gloo processes with different loss windows: each must log the pooled mean (8/4 = 2.0),
    not its own (1.0 on rank 0, 5.0 on rank 1)."""
    import subprocess
    import sys

    script = tmp_path / "mean.py"
    script.write_text(_MEAN_OVER_RANKS)
    store = tmp_path / "store"
    procs = [
        subprocess.Popen([sys.executable, str(script), str(r), str(store)], stdout=subprocess.PIPE, text=True)
        for r in (0, 1)
    ]
    try:
        outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    finally:
        for p in procs:
            p.kill()  # a rank that died leaves the other waiting at the rendezvous
    assert all(p.returncode == 0 for p in procs)
    for avg in outs:
        assert avg == {"ok": 2.0, "loss": 4.0, "bce": 1.0, "dice": 0.0}
        assert avg["loss"] / avg["ok"] == 2.0  # the trainer logs window loss / ok


def test_init_grows_a_model_into_the_duplication_cue(tmp_path, one_pair, tiny_weights):
    run = tmp_path / "grow"
    summary = train(
        _cfg(tmp_path, "grow", [str(one_pair)], model="sparsevit-test-dup", init=str(tiny_weights), max_steps=2)
    )
    assert summary["model"] == "sparsevit-test-dup"
    assert "grew sparsevit-test into sparsevit-test-dup: 4 new tensors" in (run / "train.log").read_text()
    from imlscan.weights.store import model_from_file

    model, meta = model_from_file(run / "best.safetensors")
    assert meta["variant"] == "sparsevit-test-dup" and model.head.dup is not None
    assert model.head.dup.fc2.weight.abs().sum() > 0  # the cue trained
    resumed = load_run_config(run, {"max_steps": 3})
    assert train(resumed, resume=True)["model"] == "sparsevit-test-dup"
    assert sorted(_train_losses(run)) == [1, 2, 3]  # continued where it stopped, not from step 1


def test_frozen_stages_keep_weights_and_batchnorm_statistics(tmp_path, one_pair, tiny_weights):
    from imlscan.weights.store import model_from_file

    run = tmp_path / "frozen"
    train(_cfg(tmp_path, "frozen", [str(one_pair)], model=None, init=str(tiny_weights), max_steps=3, freeze_stages=2))
    start = model_from_file(tiny_weights)[0].state_dict()
    after = model_from_file(run / "best.safetensors")[0].state_dict()
    frozen = ("encoder.patch_embed1.", "encoder.blocks1.", "encoder.patch_embed2.", "encoder.blocks2.")
    stats = [k for k in start if k.startswith(frozen) and k.endswith("running_mean")]
    assert stats, "the test model's conv stages have BatchNorms"
    for k, v in start.items():
        if k.startswith(frozen):  # weights and running statistics, bit for bit
            assert torch.equal(after[k].to(v.dtype), v), k
    moved = [k for k in start if not k.startswith(frozen) and not torch.equal(after[k].to(start[k].dtype), start[k])]
    assert any(k.startswith("encoder.blocks3.") for k in moved) and any(k.startswith("head.") for k in moved)
    assert "froze encoder stages 1-2" in (run / "train.log").read_text()
    assert json.loads((run / "config.json").read_text())["freeze_stages"] == 2
    train(load_run_config(run, {"max_steps": 4}), resume=True)  # a resumed run stays frozen
    again = model_from_file(run / "best.safetensors")[0].state_dict()
    assert all(torch.equal(again[k].to(start[k].dtype), start[k]) for k in start if k.startswith(frozen))


def test_freezing_the_whole_encoder_trains_the_head_only(tiny_model):
    from imlscan.models import create_model

    tiny_model.freeze_stages(4)
    tiny_model.train()
    assert all(not p.requires_grad for p in tiny_model.encoder.parameters())
    assert all(p.requires_grad for p in tiny_model.head.parameters())
    assert not any(m.training for m in tiny_model.encoder.modules())  # train() leaves the BatchNorms frozen
    three = create_model("sparsevit-test")
    three.freeze_stages(3)
    assert not any(p.requires_grad for p in three.encoder.norm3.parameters())  # stage 3's output norm too
    assert all(p.requires_grad for p in three.encoder.blocks4.parameters())
    with pytest.raises(UsageError, match="--freeze-stages must be 0 to 4"):
        TrainConfig(data=["x"], out="o", max_steps=1, freeze_stages=5).check()
