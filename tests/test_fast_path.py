"""The compiled fast path (freezing, compile variants), the fp32 head option, and what ``bench``
reports about the machine's matrix-product rate. Structure and arithmetic only, never speed."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import trained_looking

from imlscan.errors import UsageError
from imlscan.models.fuse import (
    COMPILE_VARIANTS,
    DEFAULT_COMPILE_VARIANT,
    compile_variant,
    fast_forward,
)

CPU = torch.device("cpu")


def test_compiled_frozen_fast_path_equals_plain_and_freezing_stays_scoped(monkeypatch):
    """Two compiles (tens of seconds cold, a few with the kernel cache): inductor must really
    turn the weights into constants (only the image stays a graph input: with freezing asked
    the wrong way the pass runs but keeps every weight an input), give the plain model's
    outputs, and leave the process-wide inductor setting as it found it."""
    import torch._inductor.config as inductor_config
    import torch._inductor.freezing as freezing

    kept_inputs: list[int] = []
    real_freeze = freezing.freeze

    def spy(*args, **kwargs):
        frozen_gm, preserved = real_freeze(*args, **kwargs)
        kept_inputs.append(len(preserved))
        return frozen_gm, preserved

    monkeypatch.setattr(freezing, "freeze", spy)
    assert inductor_config.freezing is False
    m = trained_looking()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = m(x)
    # A plain compile of the same model first: dynamo must not hand its unfrozen graph to the
    # frozen variant (bench times both in one process).
    assert (fast_forward(m, CPU, "fp32", compile="compile")(x) - ref).abs().max().item() < 1e-4
    assert kept_inputs == []
    fast = fast_forward(m, CPU, "fp32", compile="freeze")
    out = fast(x)
    assert kept_inputs == [1], f"graph inputs left after freezing: {kept_inputs}"
    assert inductor_config.freezing is False, "freezing leaked into torch._inductor.config"
    assert fast.compile_variant == "freeze"
    assert (out - ref).abs().max().item() < 1e-4


def test_compile_variants_resolve():
    assert compile_variant(False) == compile_variant("eager") == compile_variant("off") == "eager"  # off: the CLI word
    assert compile_variant(True) == DEFAULT_COMPILE_VARIANT in COMPILE_VARIANTS
    assert COMPILE_VARIANTS["freeze"] == (True, None)
    assert COMPILE_VARIANTS["freeze-autotune"] == (True, "max-autotune-no-cudagraphs")
    with pytest.raises(UsageError, match="unknown compile variant"):
        compile_variant("frozen")


@pytest.mark.parametrize("name", ["sparsevit-test", "sparsevit-test-dup"])
def test_bf16_keeps_the_named_parts_in_fp32(name):
    """Kept parts hold the fp32 weights themselves (not bf16-rounded ones cast back up), take
    fp32 inputs (a missed cast is a dtype error in the first conv or F.linear) and hand bf16 on;
    the rest is bf16; the results stay close to fp32; the caller's model is untouched."""
    from imlscan.models.fuse import cast_except, fuse_for_inference

    m = trained_looking(name)
    fused = cast_except(fuse_for_inference(m), torch.bfloat16, ("stem", "head"))
    ref = fuse_for_inference(m)
    assert all(torch.equal(p, q) for p, q in zip(fused.head.parameters(), ref.head.parameters()))
    assert fused.encoder.patch_embed1.proj.weight.dtype == torch.float32
    assert fused.encoder.patch_embed2.proj.weight.dtype == torch.bfloat16
    assert fused.encoder.blocks3[0].attn.qkv.weight.dtype == torch.bfloat16
    x = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(2))
    f32 = fast_forward(m, CPU, "fp32")(x)
    for keep in [("head",), ("stem",), ("stem", "head")]:
        out = fast_forward(m, CPU, "bf16", keep_fp32=keep)(x)
        assert out.dtype == torch.float32 and out.shape == f32.shape
        assert (out - f32).abs().max().item() < 0.1 * f32.abs().max().item()
    assert all(p.dtype == torch.float32 for p in m.parameters()), "the caller's model was changed"
    with pytest.raises(UsageError, match="cannot keep"):
        fast_forward(m, CPU, "bf16", keep_fp32=("neck",))


def test_matmul_rate_is_positive_and_finite():
    from imlscan.scanning.bench import matmul_tflops

    rate = matmul_tflops("fp32", CPU, size=128, reps=2, warmup=1)
    assert rate > 0 and math.isfinite(rate)
    with pytest.raises(UsageError):
        matmul_tflops("fp32", CPU, size=0)


def test_bench_fraction_is_tflops_over_the_measured_rate():
    from imlscan.scanning.bench import run_benchmark

    res = run_benchmark(
        trained_looking(),
        size=64,
        batches=[1],
        precisions=["fp32", "bf16"],
        device="cpu",
        compile=["eager"],
        warmup=1,
        iters=2,
        matmul_size=128,
    )
    rates = res["matmul_tflops"]
    assert {"fp32", "bf16"} <= set(rates) and res["matmul_size"] == 128
    rows = res["results"]
    assert [(r["path"], r["precision"], r["compile_variant"]) for r in rows] == [
        ("plain", "fp32", "eager"),
        ("fast", "fp32", "eager"),
        ("fast", "bf16", "eager"),
    ]
    for r in rows:
        assert r["fraction_of_matmul_rate"] == pytest.approx(r["tflops"] / rates[r["precision"]], rel=1e-12)
        assert r["first_call_s"] > 0 and r["compiled"] is False
    skipped = run_benchmark(trained_looking(), size=64, device="cpu", warmup=0, iters=1, matmul_size=None)
    assert skipped["matmul_tflops"] is None
    assert all(r["fraction_of_matmul_rate"] is None for r in skipped["results"])


def test_bench_cli_refuses_unknown_or_doubled_compile_choices():
    from typer.testing import CliRunner

    from imlscan.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["bench", "--model", "sparsevit-test", "--size", "64", "--compile-variants", "frozen"])
    assert r.exit_code == 2 and "unknown compile variant" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["bench", "--model", "sparsevit-test", "--compile", "--compile-variants", "eager"])
    assert r.exit_code == 2 and "not both" in r.output


def test_interleaved_bench_times_every_setting_in_turn(monkeypatch):
    """Interleaved: every setting is built before any is timed and the timed calls alternate
    A, B, A, B, ... with the matrix products in each round (so the rate shares the settings'
    load); peak memory is reported as not measured rather than as a wrong number."""
    import imlscan.scanning.bench as bench

    calls: list[str] = []
    real = bench.time_forward

    def recording(fn, x, device, *, warmup, iters, min_seconds=0.0):
        if iters:
            calls.append(getattr(fn, "compile_variant", fn.__name__))
        return real(fn, x, device, warmup=warmup, iters=iters, min_seconds=min_seconds)

    monkeypatch.setattr(bench, "time_forward", recording)
    res = bench.run_benchmark(
        trained_looking(), size=64, device="cpu", warmup=1, iters=3, matmul_size=64, interleave=True
    )
    n = len(res["matmul_tflops"])  # fp32, and bf16 where the CPU has it natively
    assert "fp32" in res["matmul_tflops"] and res["interleaved"] is True
    assert calls == ["<lambda>"] * n + (["plain", "eager"] + ["<lambda>"] * n) * 3
    for r in res["results"]:
        assert r["peak_memory_mb"] is None and "interleaved" in r["memory_kind"]
        assert r["fraction_of_matmul_rate"] == pytest.approx(r["tflops"] / res["matmul_tflops"]["fp32"], rel=1e-12)
    plain, fast = res["results"]
    assert plain["speedup_vs_plain_fp32"] == 1.0
    assert fast["speedup_vs_plain_fp32"] == pytest.approx(fast["images_per_s"] / plain["images_per_s"])


def test_batch_and_eval_take_a_compile_variant_and_refuse_unknown_ones_before_loading(tiny_weights, tmp_path):
    """`--compile` reaches the predictor's fast path (compiled lazily: nothing runs here), and a
    misspelt variant is one usage line before any weights are read, not a silent eager run."""
    from typer.testing import CliRunner

    from imlscan.cli import app
    from imlscan.cli.predictor import load_predictor

    pred = load_predictor(str(tiny_weights), "cpu", "fp32", compile="freeze")
    assert pred._forward.compile_variant == "freeze"
    assert load_predictor(str(tiny_weights), "cpu", "fp32")._forward.compile_variant == "eager"
    import json

    import cv2
    import numpy as np

    runner = CliRunner()
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "m.png"), np.zeros((32, 32), np.uint8))
    (tmp_path / "pairs.json").write_text(json.dumps([["a.png", "m.png"]]))
    for args in (["batch", str(tmp_path / "in")], ["eval", str(tmp_path / "pairs.json")]):
        r = runner.invoke(app, [*args, "--compile", "frozen", "--weights", str(tmp_path / "no.safetensors")])
        assert r.exit_code == 2 and "unknown compile variant 'frozen'" in r.output, r.output
        assert "Traceback" not in r.output


def test_bf16_scans_on_a_cpu_keep_the_stem_in_fp32(tiny_model):
    """The predictor's bf16 path is the fast path with the stem in fp32 (defaults.CPU_BF16_FP32_PARTS),
    which halves the masks' disagreement with fp32; an all-bf16 forward gives other logits."""
    from imlscan.defaults import CPU_BF16_FP32_PARTS
    from imlscan.scanning.predict import Predictor

    assert CPU_BF16_FP32_PARTS == ("stem",)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    pred = Predictor(tiny_model, device="cpu", precision="bf16", mode="resize", size=64)
    with_stem = fast_forward(tiny_model, torch.device("cpu"), "bf16", keep_fp32=("stem",))
    all_bf16 = fast_forward(tiny_model, torch.device("cpu"), "bf16")
    assert torch.equal(pred.logits(x), with_stem(x))
    assert not torch.equal(pred.logits(x), all_bf16(x))
    # the reports say so, and a batch resumed from bf16 results made before then rescans them
    from imlscan.scanning.batch import settings_key

    fp32 = Predictor(tiny_model, device="cpu", precision="fp32", mode="resize", size=64)
    assert pred.describe((64, 64))["fp32_parts"] == ["stem"] and fp32.describe((64, 64))["fp32_parts"] == []
    assert pred.describe((64, 64))["compile"] == "eager"
    key = settings_key(pred, 0.5)
    pred.fp32_parts = []
    assert settings_key(pred, 0.5) != key
