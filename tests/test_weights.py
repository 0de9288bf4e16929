"""The weights file format: round trip, metadata, and one clear error per kind of bad file."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from imlscan.cli import app
from imlscan.errors import ImlscanError
from imlscan.models import create_model
from imlscan.weights.store import (
    PROVENANCE_FIELDS,
    build_metadata,
    default_status,
    git_commit,
    load_model,
    preprocessing_override_note,
    read_metadata,
    save_weights,
    verify_weights,
)

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def run_cli(*args: str):
    return runner.invoke(app, list(args))


def error_lines(result) -> list[str]:
    """Non-empty stderr lines: the CLI promises one error line (plus an optional hint line)."""
    return [ln for ln in result.stderr.splitlines() if ln.strip()]


def _x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 3, 64, 48)


def test_round_trip_gives_identical_outputs_and_full_metadata(tiny_model, tmp_path):
    path = tmp_path / "m.safetensors"
    sha = save_weights(tiny_model, path, name="rt", variant="sparsevit-test", provenance={"data": "toy", "steps": 7})
    loaded = load_model(path, device="cpu")
    with torch.no_grad():
        assert torch.equal(loaded(_x()), tiny_model(_x()))
    info = loaded.weights_info
    assert (info.name, info.variant, info.sha256, info.source, info.trained) == (
        "rt",
        "sparsevit-test",
        sha,
        "path",
        True,
    )
    prov = info.provenance
    assert set(PROVENANCE_FIELDS) <= set(prov)
    assert prov["data"] == "toy" and prov["steps"] == 7
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", prov["date"])
    meta = read_metadata(path)
    assert meta["output"]["activation"] == "sigmoid" and meta["licence"] == "Apache-2.0"
    assert re.fullmatch(r"[0-9a-f]{64}", meta["tensors_sha256"])
    assert json.loads(json.dumps(info.to_dict()))["sha256"] == sha


def test_fp16_storage_is_smaller_and_upcast_at_load(tiny_model, tmp_path):
    full, half = tmp_path / "f32.safetensors", tmp_path / "f16.safetensors"
    save_weights(tiny_model, full, name="f32")
    save_weights(tiny_model, half, name="f16", dtype=torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    assert read_metadata(half)["storage_dtype"] == "float16"
    loaded = load_model(half, device="cpu")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    ref = dict(tiny_model.named_parameters())
    for k, p in loaded.named_parameters():
        torch.testing.assert_close(p, ref[k].half().float())


def test_git_commit_is_a_hash_in_a_checkout_and_unknown_elsewhere(tmp_path):
    assert git_commit(tmp_path) == "unknown"
    commit = git_commit()
    assert commit == "unknown" or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit)


def _bad(tmp_path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _error(path) -> str:
    with pytest.raises(ImlscanError) as e:
        load_model(path, device="cpu")
    return str(e.value)


def test_truncated_file(tiny_weights, tmp_path):
    data = tiny_weights.read_bytes()
    assert "truncated" in _error(_bad(tmp_path, "half.safetensors", data[: len(data) // 2]))


def test_zero_byte_file(tmp_path):
    assert "empty file (0 bytes)" in _error(_bad(tmp_path, "zero.safetensors", b""))


def test_non_safetensors_files(tmp_path):
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    assert ok
    for name, data in (("image.safetensors", png.tobytes()), ("notes.safetensors", b"just some text\n" * 20)):
        assert "not a safetensors weights file" in _error(_bad(tmp_path, name, data))


def test_corrupted_tensor_bytes_are_caught_by_the_checksum(tiny_weights, tmp_path):
    data = bytearray(tiny_weights.read_bytes())
    data[-40:] = bytes(b ^ 0xFF for b in data[-40:])  # inside the tensor data, header intact
    msg = _error(_bad(tmp_path, "flipped.safetensors", bytes(data)))
    assert "corrupted" in msg and "checksum" in msg


def test_corrupted_header(tiny_weights, tmp_path):
    data = bytearray(tiny_weights.read_bytes())
    data[8:12] = b"####"
    assert "not a safetensors weights file" in _error(_bad(tmp_path, "hdr.safetensors", bytes(data)))


def test_wrong_architecture_name(tmp_path):
    p = tmp_path / "resnet.safetensors"
    save_file({"w": torch.zeros(2)}, str(p), metadata={"imlscan": json.dumps({"arch": "resnet50"})})
    assert "unsupported architecture 'resnet50'" in _error(p)


def test_wrong_shapes_list_the_mismatched_keys(tiny_model, tmp_path):
    wider = create_model("sparsevit-test", dims=(8, 16, 32, 48))
    p = tmp_path / "mismatch.safetensors"
    save_weights(tiny_model, p, metadata=build_metadata(wider, name="mismatch"))
    msg = _error(p)
    assert "do not fit the architecture" in msg and "shape mismatch" in msg
    assert "encoder." in msg  # names the first mismatched keys


def test_safetensors_without_imlscan_metadata_hints_convert(tmp_path):
    p = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    assert "without imlscan metadata" in _error(p) and "imlscan weights convert" in _error(p)


def test_torch_checkpoint_gets_a_convert_hint(tiny_model, tmp_path):
    p = tmp_path / "official.pth"
    torch.save({"model": tiny_model.state_dict()}, p)
    msg = _error(p)
    assert "torch checkpoint" in msg and "imlscan weights convert" in msg


def test_missing_file_and_unknown_name(tmp_path):
    assert "weights file not found" in _error(tmp_path / "nope.safetensors")
    assert "unknown weights 'no-such-model'" in _error("no-such-model")


@pytest.mark.parametrize("spec", ["", "  ", "no-such-model", "missing/nope.safetensors", "hf-hub:org"])
def test_inspection_reads_a_weights_value_as_scan_does(spec, tmp_path, monkeypatch):
    """`weights info/verify` (never downloads) and `scan --weights` (may download) share one
    reading of the value: the same error class and message, never a different interpretation
    (an empty value once made `info` inspect the current folder)."""
    from imlscan.weights.store import local_target, locate_weights

    monkeypatch.chdir(tmp_path)
    errors = []
    for resolve in (locate_weights, local_target):
        with pytest.raises(ImlscanError) as e:
            resolve(spec)
        errors.append((type(e.value), str(e.value)))
    assert errors[0] == errors[1]


def test_invalid_preprocessing_spec_is_refused(tiny_model, tmp_path):
    p = tmp_path / "prep.safetensors"
    meta = build_metadata(tiny_model, name="prep")
    meta["preprocessing"]["mode"] = "tiles"
    save_weights(tiny_model, p, metadata=meta)
    assert "invalid preprocessing spec" in _error(p)
    with pytest.raises(ImlscanError, match="size"):
        build_metadata(tiny_model, name="x", preprocessing={"size": 0})


def test_preprocessing_override_note(tiny_weights):
    info = load_model(tiny_weights, device="cpu").weights_info
    assert info.preprocessing["mode"] == "resize" and info.preprocessing["size"] == 512
    assert preprocessing_override_note(info) is None
    assert preprocessing_override_note(info, "resize", 512) is None
    native = preprocessing_override_note(info, "native")
    assert native and "512x512" in native and "native" in native
    smaller = preprocessing_override_note(info, "resize", 256)
    assert smaller and "256x256" in smaller
    untrained = load_model(None, device="cpu").weights_info if default_status()["file"] is None else None
    if untrained is not None:
        assert not untrained.trained and preprocessing_override_note(untrained, "native") is None


def test_verify_api_checks_hash_and_strict_load(tiny_weights):
    report = verify_weights(tiny_weights)
    assert report["strict_load"] == "ok" and report["tensors_checksum"] == "ok"
    assert report["sha256_check"].startswith("no pinned hash")
    ok = verify_weights(str(tiny_weights), sha256=report["sha256"].upper())
    assert ok["sha256_check"] == "ok (--sha256)"
    with pytest.raises(ImlscanError, match="sha256 mismatch") as e:
        verify_weights(tiny_weights, sha256="0" * 64)
    assert report["sha256"] in str(e.value) and "0" * 64 in str(e.value)
    assert tiny_weights.exists()  # a local file is never deleted, only refused


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_info_json_parses(tiny_weights):
    r = run_cli("weights", "info", str(tiny_weights), "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["metadata"]["name"] == "tiny-test" and d["metadata"]["variant"] == "sparsevit-test"
    assert d["sha256"] == verify_weights(tiny_weights)["sha256"]
    assert set(PROVENANCE_FIELDS) <= set(d["metadata"]["provenance"])


def test_cli_info_table_and_verify(tiny_weights):
    r = run_cli("weights", "info", str(tiny_weights))
    assert r.exit_code == 0 and "preprocessing.mode" in r.stderr and "provenance.source_commit" in r.stderr
    r = run_cli("weights", "verify", str(tiny_weights))
    assert r.exit_code == 0 and "OK" in r.stderr
    r = run_cli("weights", "verify", str(tiny_weights), "--json")
    assert json.loads(r.stdout)["strict_load"] == "ok"


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p, w: p.write_bytes(w.read_bytes()[:300]), "truncated"),
        (lambda p, w: p.write_bytes(b""), "empty file"),
        (lambda p, w: p.write_bytes(b"hello " * 50), "not a safetensors weights file"),
    ],
)
def test_cli_bad_files_give_one_line_and_exit_1(tiny_weights, tmp_path, make, expected):
    bad = tmp_path / "bad.safetensors"
    make(bad, tiny_weights)
    for cmd in ("verify", "info"):
        r = run_cli("weights", cmd, str(bad))
        assert r.exit_code == 1
        lines = error_lines(r)
        assert lines[0].startswith("error:") and expected in lines[0]
        assert len(lines) <= 2 and "Traceback" not in r.output


def test_cli_verify_hash_mismatch_and_missing(tiny_weights, tmp_path):
    r = run_cli("weights", "verify", str(tiny_weights), "--sha256", "a" * 64)
    assert r.exit_code == 1 and "sha256 mismatch" in error_lines(r)[0]
    r = run_cli("weights", "verify", str(tmp_path / "missing.safetensors"))
    assert r.exit_code == 1 and "not found" in error_lines(r)[0]
    r = run_cli("weights", "verify", str(tiny_weights), "--sha256", "xyz")
    assert r.exit_code == 2 and "64 hex digits" in error_lines(r)[0]


def test_cli_help_texts_have_examples():
    for cmd in ("list", "download", "verify", "info", "convert"):
        r = run_cli("weights", cmd, "--help")
        assert r.exit_code == 0 and "Example: imlscan weights" in r.output, cmd


# --- packaging ---------------------------------------------------------------------------------


def test_embedded_weights_are_small_and_default_is_consistent():
    for f in (ROOT / "weights").glob("*.safetensors"):
        assert f.stat().st_size < 50 * 2**20, f"{f.name} is too large to ship in the wheel"
    status = default_status()
    assert not status["resolves_to"].startswith(("MISSING", "BROKEN")), status


def test_build_metadata_never_aliases_the_default_preprocessing(tiny_model):
    """Editing one file's metadata (a tool setting its own std) must not change every later file's."""
    first = build_metadata(tiny_model, name="a")
    first["preprocessing"]["std"][0] = 0.5
    assert build_metadata(tiny_model, name="b")["preprocessing"]["std"][0] == pytest.approx(0.229)


def test_written_weights_are_readable_by_others_like_any_output(tiny_model, tmp_path):
    """safetensors replaces the atomic temporary with a file of its own (mode 0600): a weights file
    written for a team or a Hub upload must get the umask's permissions like every other output."""
    from imlscan.weights.store import rewrite_metadata

    old = os.umask(0o022)
    try:
        first = tmp_path / "a.safetensors"
        save_weights(tiny_model, first, name="a")
        second = rewrite_metadata(first, tmp_path / "b.safetensors", {"name": "b"})
    finally:
        os.umask(old)
    for path in (first, second):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name
