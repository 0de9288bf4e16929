"""The weights gate: hostile or broken weights files are refused with one line naming the field
and its rule, before any memory is given to what the file declares, and a map that comes out
non-finite anyway is never ranked or written."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from imlscan.cli import app
from imlscan.errors import ImlscanError
from imlscan.models import create_model
from imlscan.weights.store import METADATA_KEY, build_metadata, load_model, read_metadata, save_weights

runner = CliRunner()


def hostile(tmp_path: Path, model: torch.nn.Module, name: str, change) -> Path:
    """A weights file of ``model`` whose metadata ``change`` edited in place, written the way
    imlscan writes its own (so the tensors' checksum is right: only the edit is hostile)."""
    meta = build_metadata(model, name=name, variant="sparsevit-test")
    change(meta)
    path = tmp_path / f"{name}.safetensors"
    save_weights(model, path, metadata=meta)
    return path


def refusal(path: Path) -> str:
    """The one-line refusal, which must come from reading the metadata (nothing built yet) and
    be the same when loading the model."""
    with pytest.raises(ImlscanError) as early:
        read_metadata(path)
    with pytest.raises(ImlscanError) as load:
        load_model(path, device="cpu")
    assert str(early.value) == str(load.value)
    msg = str(load.value)
    assert "\n" not in msg and "\x1b" not in msg and len(msg) < 400, msg
    return msg


HUGE_CONFIG = {  # every field within its bounds, 11.9 billion parameters (47 GB) together
    "depths": [64] * 4,
    "dims": [2048] * 4,
    "head_dim": 64,
    "stage3_groups": [64],
    "stage3_sparsity": [1],
    "stage4_groups": [64],
    "stage4_sparsity": [1],
}

CASES = {
    "mean-nan": (
        lambda m: m["preprocessing"]["mean"].__setitem__(0, math.nan),
        "field preprocessing.mean[0] = NaN is not a finite number",
    ),
    "std-inf": (
        lambda m: m["preprocessing"]["std"].__setitem__(1, math.inf),
        "field preprocessing.std[1] = Infinity is not a finite number",
    ),
    "std-zero": (
        lambda m: m["preprocessing"]["std"].__setitem__(2, 0),
        "field preprocessing.std[2] = 0 is below the minimum",
    ),
    "depth-4096": (
        lambda m: m["config"].update(depths=[1, 1, 4096, 2], stage3_groups=[4095, 1]),
        "field config.depths[2] = 4096 is above the limit 64",
    ),
    "input-size-40000": (
        lambda m: m["preprocessing"].update(size=40_000),
        "field preprocessing.size = 40000 is above the limit",
    ),
    "copy-move-size-16384": (
        lambda m: m.update(copy_move={"size": 16_384}),
        "field copy_move.size = 16384 is above the limit",
    ),
    "licence-20mb": (
        lambda m: m.update(licence="x" * (20 << 20)),
        "field licence is 20,971,520 characters long, above the limit",
    ),
    "format-version-string": (
        lambda m: m.update(format_version="1"),
        "field format_version must be an integer, got a string",
    ),
    "config-depths-string": (
        lambda m: m["config"].update(depths="1,1,2,2"),
        "field config.depths must be a list, got a string",
    ),
    "config-key-escape-sequence": (
        lambda m: m["config"].update({"\x1b[2Jevil": 1}),
        "field config.\\x1b[2Jevil is not a SparseViT config field",
    ),
    "reference-score-nan": (
        lambda m: m.update(calibration={"threshold": 0.5, "authentic_scores": [0.1, math.nan]}),
        "field calibration.authentic_scores[1] = NaN is not a finite number",
    ),
    "fusion-term-inf": (
        lambda m: m.update(fusion={"version": 1, "terms": {"adq": {"bias": -math.inf, "weight": 1.0}}}),
        "field fusion.terms.adq.bias = -Infinity is not a finite number",
    ),
    "keypoint-window-word": (
        lambda m: m.update(copy_move_keypoints={"window": "huge"}),
        "field copy_move_keypoints.window must be an integer, got 'huge'",
    ),
    "nested-40-deep": (
        lambda m: m["provenance"].update(notes=json.loads("[" * 40 + "]" * 40)),
        "is nested 17 levels deep, above the limit 16",
    ),
    "provenance-160kb": (
        lambda m: m["provenance"].update(notes=["y" * 8000] * 20),
        "field provenance is 160,",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_metadata_is_refused_naming_the_field_and_the_rule(case, tiny_model, tmp_path):
    change, expected = CASES[case]
    msg = refusal(hostile(tmp_path, tiny_model, "h", change))
    assert expected in msg, msg
    assert "upgrade" not in msg and "Traceback" not in msg


def test_a_string_format_version_is_a_type_error_and_a_newer_one_asks_for_an_upgrade(tiny_model, tmp_path):
    assert "upgrade" not in refusal(hostile(tmp_path, tiny_model, "s", lambda m: m.update(format_version="1")))
    newer = refusal(hostile(tmp_path, tiny_model, "n", lambda m: m.update(format_version=2)))
    assert "weights format 2" in newer and "upgrade imlscan" in newer


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_tensor_holding_nan_or_inf_is_refused_naming_it(value, tmp_path):
    torch.manual_seed(0)
    model = create_model("sparsevit-test").eval()
    with torch.no_grad():
        model.encoder.blocks3[0].attn.qkv.weight[3, 5] = value
    path = tmp_path / "bad.safetensors"
    save_weights(model, path, name="bad", dtype=torch.float16)  # the checksum is right: only the values are bad
    read_metadata(path)  # the metadata is fine
    with pytest.raises(ImlscanError) as e:
        load_model(path, device="cpu")
    assert "tensor encoder.blocks3.0.attn.qkv.weight holds NaN or infinite values" in str(e.value)


def test_metadata_that_breaks_json_parsers_is_one_line(tmp_path):
    """Nesting that would exhaust Python's stack and a 5000-digit integer, written raw."""
    for name, text in (
        ("deep", '{"arch": "sparsevit", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        ("digits", '{"arch": "sparsevit", "format_version": ' + "9" * 5000 + "}"),
    ):
        path = tmp_path / f"{name}.safetensors"
        save_file({"w": torch.zeros(2)}, str(path), metadata={METADATA_KEY: text})
        with pytest.raises(ImlscanError) as e:
            load_model(path, device="cpu")
        assert "imlscan metadata is" in str(e.value) and "\n" not in str(e.value)


def test_metadata_over_its_size_limit_is_refused_without_parsing_it_whole(tmp_path):
    """15 MB of empty lists (5 million of them: about 360 MB once parsed) is refused after a
    bounded count of values; a single over-long field is named."""
    path = tmp_path / "lists.safetensors"
    text = '{"arch": "sparsevit", "config": {}, "x": [' + "[]," * 5_000_000 + "[]]}"
    save_file({"w": torch.zeros(2)}, str(path), metadata={METADATA_KEY: text})
    with pytest.raises(ImlscanError) as e:
        read_metadata(path)
    assert f"metadata is {len(text):,} characters of JSON, above the limit 1,048,576" in str(e.value)


def test_settings_spelled_as_strings_still_load_and_are_bounded_alike(tiny_model, tmp_path):
    """Other tools may spell settings as strings (weights/settings.py): still read, still bounded."""
    from imlscan.scanning.copymove import CopyMoveConfig, config_of

    ok = hostile(tmp_path, tiny_model, "ok", lambda m: m.update(copy_move={"size": "64", "threshold": "0.5"}))
    assert config_of(load_model(ok, device="cpu").weights_info.metadata) == CopyMoveConfig(size=64, threshold=0.5)
    big = hostile(tmp_path, tiny_model, "big", lambda m: m.update(copy_move={"size": "16384"}))
    assert "field copy_move.size = 16384 is above the limit" in refusal(big)


def test_informational_nan_is_kept_where_training_writes_it(tiny_model, tmp_path):
    """The trainer records an undefined metric as NaN (no authentic validation photo): such a
    file is not hostile, and the gate only bounds fields imlscan reads or copies into reports."""
    path = hostile(tmp_path, tiny_model, "t", lambda m: m.update(training={"val_metrics": {"authentic_fpr": math.nan}}))
    assert math.isnan(load_model(path, device="cpu").weights_info.metadata["training"]["val_metrics"]["authentic_fpr"])


def _photo(tmp_path: Path) -> Path:
    img = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(img)
    return img


@pytest.mark.parametrize("case", ["mean-nan", "depth-4096", "format-version-string", "licence-20mb"])
def test_cli_scan_refuses_hostile_weights_with_one_line(case, tiny_model, tmp_path):
    change, expected = CASES[case]
    weights = hostile(tmp_path, tiny_model, "h", change)
    out = tmp_path / "out"
    res = runner.invoke(app, ["scan", str(_photo(tmp_path)), "--weights", str(weights), "--out", str(out)])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 1 and lines[0].startswith("error:") and expected in lines[0], res.output
    assert len(lines) <= 2 and "Traceback" not in res.output
    assert not out.exists() or not any(out.rglob("*.json"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="address-space limit and wait4 are Linux's")
def test_a_config_declaring_47_gb_is_refused_before_allocating_it(tiny_model, tmp_path):
    """Every config field within its bounds, 47 GB in all: the parameters are counted on the meta
    device. Run as the whole CLI in a process limited to 4 GiB of address space (so that code
    which does allocate fails fast instead of exhausting the machine): the refusal names the
    field, and the process never grew past 1.5 GiB (importing torch and friends takes about 0.5)."""
    import resource

    weights = hostile(tmp_path, tiny_model, "huge", lambda m: m["config"].update(HUGE_CONFIG))
    limit = 4 << 30

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    cmd = [sys.executable, "-m", "imlscan", "scan", str(_photo(tmp_path)), "--weights", str(weights)]
    cmd += ["--out", str(tmp_path / "out")]
    with open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=cap)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = (tmp_path / "stderr").read_text()
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and "field config describes 11,892,568,065 parameters" in lines[0], stderr
    assert len(lines) <= 2 and "Traceback" not in stderr
    assert usage.ru_maxrss * 1024 < 1.5 * (1 << 30), usage.ru_maxrss


def test_a_map_that_comes_out_nan_is_never_ranked_or_written(tiny_weights, tmp_path):
    """The last guard: weights that passed the gate and still produce NaN (here poisoned in memory,
    as an fp16 overflow would) raise an error naming the weights instead of a 'nan' score."""
    from imlscan.scanning.predict import Predictor, scan

    model = load_model(tiny_weights, device="cpu")
    with torch.no_grad():
        model.head.classifier.bias.fill_(math.nan)
    with pytest.raises(ImlscanError) as e:
        scan(_photo(tmp_path), Predictor(model, device="cpu"))
    msg = str(e.value)
    assert "photo.png: the map holds NaN" in msg and str(tiny_weights) in msg and "\n" not in msg


# --- property: whatever a field holds, a model or one line ------------------------------------------

FIELDS = [
    ("format_version",),
    ("arch",),
    ("name",),
    ("licence",),
    ("tensors_sha256",),
    ("config",),
    ("config", "depths"),
    ("config", "depths", 2),
    ("config", "dims", 3),
    ("config", "head_dim"),
    ("config", "mlp_ratio"),
    ("config", "qkv_bias"),
    ("config", "stage3_groups"),
    ("config", "stage3_sparsity", 0),
    ("config", "dup_dim"),
    ("config", "dup_key_stride"),
    ("preprocessing",),
    ("preprocessing", "mode"),
    ("preprocessing", "size"),
    ("preprocessing", "mean"),
    ("preprocessing", "std", 1),
    ("provenance",),
    ("provenance", "data"),
    ("copy_move",),
    ("copy_move", "size"),
    ("copy_move", "threshold"),
    ("copy_move_keypoints",),
    ("copy_move_keypoints", "window"),
    ("copy_move_keypoints", "verify"),
    ("calibration",),
    ("calibration", "authentic_scores"),
    ("calibration", "threshold"),
    ("fusion",),
    ("fusion", "terms"),
    ("fusion", "terms", "adq", "bias"),
]


def _json_values():
    from hypothesis import strategies as st

    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-3, 5000)
        | st.integers(-(10**30), 10**30)
        | st.floats()
        | st.text(max_size=12)
        | st.sampled_from(["512", "1", "true", "resize", "sparsevit"])
    )
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    )


def _put(meta: dict, path: tuple, value) -> None:
    target = meta
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def test_any_value_in_any_field_gives_a_model_or_one_line(tiny_weights, tmp_path):
    """Random JSON in the fields imlscan reads: the file loads, and what every report copies from
    it is strict JSON and its settings parse; or it is refused with one ImlscanError line. Never
    another exception (``IMLSCAN_FUZZ_EXAMPLES=N`` searches longer)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from safetensors.torch import load_file

    from imlscan.safetext import dumps_json
    from imlscan.scanning.copymove import config_of
    from imlscan.scanning.copymove_keypoints import keypoint_config_of
    from imlscan.scanning.fusion import FusionRule

    tensors = load_file(str(tiny_weights))
    base = read_metadata(tiny_weights)
    base.update(
        copy_move={"size": 64, "threshold": 0.5},
        copy_move_keypoints={"window": 7, "verify": True},
        calibration={"threshold": 0.5, "authentic_scores": [0.2, 0.4]},
        fusion={"version": 1, "terms": {"adq": {"bias": 0.1, "weight": 1.0}}},
    )
    path = tmp_path / "fuzzed.safetensors"

    @settings(
        max_examples=int(os.environ.get("IMLSCAN_FUZZ_EXAMPLES") or 60),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(field=st.sampled_from(FIELDS), value=_json_values())
    def check(field, value):
        meta = json.loads(json.dumps(base))
        _put(meta, field, value)
        save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta)})
        try:
            model = load_model(path, device="cpu")
            info = model.weights_info
            dumps_json(info.to_dict())
            for read in (config_of, keypoint_config_of, FusionRule.of):
                read(info.metadata)
        except ImlscanError as e:
            assert "\n" not in str(e) and "Traceback" not in str(e), str(e)

    check()
