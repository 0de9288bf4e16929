"""Hub downloads through the real ``huggingface_hub.hf_hub_download``, against a local server
(tests/hubserver.py) selected with HF_ENDPOINT, with the cache in tmp_path. Nothing here
reaches the network."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pytest
import torch
from hubserver import FakeHub
from typer.testing import CliRunner

from imlscan.cli import app
from imlscan.errors import ImlscanError, UsageError
from imlscan.models import create_model
from imlscan.weights import hub
from imlscan.weights import store as weights
from imlscan.weights.store import load_model, save_weights

REPO = "imlscan-test/tiny"
C1, C2 = "1" * 40, "2" * 40
runner = CliRunner()


@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    """A private HF_HOME/HF_HUB_CACHE, online, no token, no proxy for 127.0.0.1."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    # huggingface_hub froze HF_HUB_OFFLINE at import: undo a value inherited from the shell that runs
    # the tests, so that the env var set per test (read by imlscan at call time) is what counts.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "hf" / "hub"


@pytest.fixture
def fake_hub(hf_env, monkeypatch):
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def weights_bytes(tmp_path: Path, seed: int) -> bytes:
    """A real tiny weights file; different seeds give different files of the same size."""
    torch.manual_seed(seed)
    model = create_model("sparsevit-test").eval()
    path = tmp_path / f"seed{seed}.safetensors"
    save_weights(model, path, name=f"tiny-seed{seed}", variant="sparsevit-test")
    return path.read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(name: str, data: bytes, revision: str = C1, filename: str = "model.safetensors") -> hub.RegisteredWeights:
    return hub.RegisteredWeights(
        name=name,
        repo_id=REPO,
        filename=filename,
        revision=revision,
        sha256=sha(data),
        size=len(data),
        licence="Apache-2.0",
        description="unit-test weights",
        variant="sparsevit-test",
    )


@pytest.fixture
def registry(monkeypatch):
    """Register entries for one test only."""
    monkeypatch.setattr(hub, "REGISTRY", {})

    def add(e: hub.RegisteredWeights) -> hub.RegisteredWeights:
        hub.register(e)
        return e

    return add


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def blobs(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("blobs/*") if p.is_file()]


# --- references and the registry --------------------------------------------------------------


def test_parse_hf_hub_forms():
    assert hub.parse_hf_hub("hf-hub:org/repo") == hub.HubRef("org/repo", "model.safetensors", None)
    assert hub.parse_hf_hub(f"hf-hub:org/repo@{C1}") == hub.HubRef("org/repo", "model.safetensors", C1)
    ref = hub.parse_hf_hub("hf-hub:org/re.po@refs/pr/1::sub/w.safetensors")
    assert ref == hub.HubRef("org/re.po", "sub/w.safetensors", "refs/pr/1")
    assert str(ref) == "hf-hub:org/re.po@refs/pr/1::sub/w.safetensors"
    assert hub.parse_hf_hub(f"hf-hub:org/repo@{C1}").pinned and not hub.parse_hf_hub("hf-hub:org/repo@main").pinned
    for bad in ("hf-hub:repo", "hf-hub:org/repo/extra", "hf-hub:org/repo@", "hf-hub:org/repo::", "hf-hub:o/r::../x"):
        with pytest.raises(UsageError):
            hub.parse_hf_hub(bad)


def test_registry_entries_must_be_pinned():
    good = dict(
        name="x",
        repo_id="o/r",
        filename="m.safetensors",
        revision=C1,
        sha256="a" * 64,
        size=1,
        licence="MIT",
        description="d",
    )
    hub.RegisteredWeights(**good)
    for field, value in (("revision", "main"), ("sha256", "abc"), ("size", 0)):
        with pytest.raises(ValueError):
            hub.RegisteredWeights(**{**good, field: value})


def test_env_is_read_at_call_time(hf_env, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example/")
    assert hub.hub_endpoint() == "http://mirror.example"
    assert hub.hub_cache_dir() == hf_env
    monkeypatch.delenv("HF_HUB_CACHE")
    assert hub.hub_cache_dir() == tmp_path / "hf" / "hub"
    assert not hub.offline_mode()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.offline_mode()


# --- downloads ---------------------------------------------------------------------------------


def test_first_download_then_cache_hit_without_network(fake_hub, registry, hf_env, tmp_path):
    data = weights_bytes(tmp_path, 0)
    fake_hub.add(REPO, C1, "model.safetensors", data)
    registry(entry("tiny", data))
    path = hub.fetch_registered("tiny")
    assert path.read_bytes() == data and hf_env in path.parents
    assert fake_hub.count("GET", "model.safetensors") == 1
    seen = len(fake_hub.requests)
    model = load_model("tiny", device="cpu")  # cached and commit-pinned: no request at all
    assert len(fake_hub.requests) == seen
    info = model.weights_info
    assert (info.source, info.sha256, info.name, info.trained) == ("registry:tiny", sha(data), "tiny-seed0", True)


def test_branch_reference_asks_for_the_commit_but_downloads_once(fake_hub, hf_env, tmp_path):
    data = weights_bytes(tmp_path, 0)
    fake_hub.add(REPO, C1, "model.safetensors", data, branch="main")
    first = load_model(f"hf-hub:{REPO}", device="cpu")
    second = load_model(f"hf-hub:{REPO}", device="cpu")
    assert fake_hub.count("GET", "model.safetensors") == 1  # the cache hit makes no second GET
    assert fake_hub.count("HEAD") >= 2  # but a branch is re-resolved each time
    assert first.weights_info.sha256 == second.weights_info.sha256 == sha(data)
    assert first.weights_info.source == f"hf-hub:{REPO}"


def test_revision_pinning_serves_each_commit_its_own_file(fake_hub, tmp_path):
    old, new = weights_bytes(tmp_path, 0), weights_bytes(tmp_path, 1)
    assert len(old) == len(new) and old != new
    fake_hub.add(REPO, C1, "model.safetensors", old)
    fake_hub.add(REPO, C2, "model.safetensors", new, branch="main")
    fake_hub.add(REPO, C2, "sub/other.safetensors", old)
    assert weights.resolve_weights(f"hf-hub:{REPO}@{C1}").read_bytes() == old
    assert weights.resolve_weights(f"hf-hub:{REPO}@{C2}").read_bytes() == new
    assert weights.resolve_weights(f"hf-hub:{REPO}@main").read_bytes() == new
    assert weights.resolve_weights(f"hf-hub:{REPO}@{C2}::sub/other.safetensors").read_bytes() == old
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a = load_model(f"hf-hub:{REPO}@{C1}", device="cpu")(x)
        b = load_model(f"hf-hub:{REPO}@{C2}", device="cpu")(x)
    assert not torch.equal(a, b)


def test_sha256_mismatch_is_rejected_and_evicted(fake_hub, registry, hf_env, tmp_path):
    pinned, served = weights_bytes(tmp_path, 0), weights_bytes(tmp_path, 1)
    fake_hub.add(REPO, C1, "model.safetensors", served)  # same size, other content
    registry(entry("tiny", pinned))
    with pytest.raises(ImlscanError) as e:
        load_model("tiny", device="cpu")
    msg = str(e.value)
    assert "sha256 mismatch for tiny" in msg and "model.safetensors" in msg
    assert sha(pinned) in msg and sha(served) in msg and "removed from the cache" in msg
    assert blobs(hf_env) == [] and hub.cached_file(entry("tiny", pinned).ref) is None
    with pytest.raises(ImlscanError, match="sha256 mismatch"):  # and it is never used later
        hub.fetch_registered("tiny")


def test_user_pinned_hash_for_hf_hub_reference(fake_hub, tmp_path):
    data = weights_bytes(tmp_path, 0)
    fake_hub.add(REPO, C1, "model.safetensors", data)
    ref = hub.parse_hf_hub(f"hf-hub:{REPO}@{C1}")
    with pytest.raises(ImlscanError, match="sha256 mismatch"):
        hub.fetch(ref, sha256="f" * 64)
    assert hub.fetch(ref, sha256=sha(data)).read_bytes() == data


def test_announced_size_mismatch_downloads_nothing(fake_hub, registry, tmp_path):
    data = weights_bytes(tmp_path, 0)
    fake_hub.add(REPO, C1, "model.safetensors", data)
    fake_hub.lie_about_size = len(data) + 1
    registry(entry("tiny", data))
    with pytest.raises(ImlscanError, match="size mismatch"):
        hub.fetch_registered("tiny")
    assert fake_hub.count("GET") == 0


def test_offline_without_cache_says_so(fake_hub, registry, monkeypatch, tmp_path):
    registry(entry("tiny", weights_bytes(tmp_path, 0)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec in ("tiny", f"hf-hub:{REPO}"):
        with pytest.raises(ImlscanError) as e:
            load_model(spec, device="cpu")
        assert "not in the local Hugging Face cache" in e.value.message and "HF_HUB_OFFLINE=1" in e.value.message
        assert "imlscan weights download" in e.value.hint and "--weights PATH" in e.value.hint
    assert fake_hub.requests == []


def test_offline_with_cache_works_without_the_server(fake_hub, registry, monkeypatch, tmp_path):
    data = weights_bytes(tmp_path, 0)
    fake_hub.add(REPO, C1, "model.safetensors", data, branch="main")
    registry(entry("tiny", data))
    hub.fetch_registered("tiny")
    hub.fetch(hub.parse_hf_hub(f"hf-hub:{REPO}"))
    fake_hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_model("tiny", device="cpu").weights_info.sha256 == sha(data)
    assert load_model(f"hf-hub:{REPO}", device="cpu").weights_info.sha256 == sha(data)


def test_unreachable_endpoint(hf_env, registry, monkeypatch, tmp_path):
    registry(entry("tiny", weights_bytes(tmp_path, 0)))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ImlscanError) as e:
        hub.fetch_registered("tiny")
    assert "cannot reach the Hugging Face Hub at http://127.0.0.1:" in e.value.message
    assert "HF_ENDPOINT" in e.value.hint and "--weights PATH" in e.value.hint


def test_missing_repo_revision_and_file(fake_hub, tmp_path):
    fake_hub.add(REPO, C1, "model.safetensors", weights_bytes(tmp_path, 0), branch="main")
    cases = {
        "hf-hub:nobody/nothing": "repository nobody/nothing not found",
        f"hf-hub:{REPO}@{C2}": f"revision '{C2}' not found",
        f"hf-hub:{REPO}::absent.safetensors": "file 'absent.safetensors' not found",
    }
    for spec, expected in cases.items():
        with pytest.raises(ImlscanError, match=expected):
            hub.fetch(hub.parse_hf_hub(spec))


# --- the embedded default ----------------------------------------------------------------------


@pytest.fixture
def default_dir(tmp_path, monkeypatch):
    d = tmp_path / "embedded"
    d.mkdir()
    monkeypatch.setattr(weights, "default_weights_dir", lambda: d)
    return d


def test_default_embedded_file_is_used(default_dir, registry, tmp_path):
    assert load_model(None, device="cpu").weights_info.trained is False  # no DEFAULT: untrained
    data = weights_bytes(tmp_path, 0)
    (default_dir / "tiny-default.safetensors").write_bytes(data)
    (default_dir / "DEFAULT").write_text("# the default\ntiny-default.safetensors\n")
    info = load_model(None, device="cpu").weights_info
    assert (info.source, info.sha256, info.trained) == ("embedded default", sha(data), True)
    registry(entry("tiny-default", weights_bytes(tmp_path, 1)))  # a pin the shipped file does not match
    with pytest.raises(ImlscanError, match="sha256 mismatch for embedded default"):
        load_model(None, device="cpu")
    assert (default_dir / "tiny-default.safetensors").exists()


def test_default_missing_file_is_downloaded_by_its_registry_entry(default_dir, fake_hub, registry, tmp_path):
    (default_dir / "DEFAULT").write_text("tiny-default.safetensors\n")
    with pytest.raises(ImlscanError, match="missing and not registered"):
        load_model(None, device="cpu")
    data = weights_bytes(tmp_path, 0)
    fake_hub.add(REPO, C1, "model.safetensors", data)
    registry(entry("tiny-default", data))
    info = load_model(None, device="cpu").weights_info
    assert info.source == "registry:tiny-default (default)" and info.sha256 == sha(data)
    r = runner.invoke(app, ["weights", "download"])  # already cached and pinned: no new GET
    assert r.exit_code == 0 and fake_hub.count("GET") == 1


def test_info_and_verify_without_a_target_look_at_the_default(default_dir, fake_hub, registry, tmp_path):
    r = runner.invoke(app, ["weights", "info"])
    assert r.exit_code == 1 and "no default weights" in r.stderr and "Traceback" not in r.output
    data = weights_bytes(tmp_path, 0)
    (default_dir / "tiny-default.safetensors").write_bytes(data)
    (default_dir / "DEFAULT").write_text("tiny-default.safetensors\n")
    info = json.loads(runner.invoke(app, ["weights", "info", "--json"]).stdout)
    assert info["target"] == "default: tiny-default.safetensors"
    assert Path(info["path"]) == default_dir / "tiny-default.safetensors" and info["sha256"] == sha(data)
    r = runner.invoke(app, ["weights", "verify", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["sha256"] == sha(data)

    (default_dir / "tiny-default.safetensors").unlink()  # not shipped: its registry entry stands in
    fake_hub.add(REPO, C1, "model.safetensors", data)
    registry(entry("tiny-default", data))
    info = json.loads(runner.invoke(app, ["weights", "info", "--json"]).stdout)
    assert info["target"] == "default: tiny-default" and info["downloaded"] is False
    assert runner.invoke(app, ["weights", "verify"]).exit_code == 1
    assert runner.invoke(app, ["weights", "download"]).exit_code == 0
    r = runner.invoke(app, ["weights", "verify", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["sha256_check"] == "ok (registry pin of tiny-default)"


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_download_list_verify_info(fake_hub, registry, hf_env, tmp_path):
    data = weights_bytes(tmp_path, 0)
    fake_hub.add(REPO, C1, "model.safetensors", data)
    registry(entry("tiny", data))
    listed = json.loads(runner.invoke(app, ["weights", "list", "--json"]).stdout)
    assert [(e["name"], e["cached"]) for e in listed["registered"]] == [("tiny", None)]
    r = runner.invoke(app, ["weights", "verify", "tiny"])
    assert r.exit_code == 1 and "not downloaded" in r.stderr and "imlscan weights download tiny" in r.stderr
    info = json.loads(runner.invoke(app, ["weights", "info", "tiny", "--json"]).stdout)
    assert info["downloaded"] is False and info["registry"]["sha256"] == sha(data)
    r = runner.invoke(app, ["weights", "download", "tiny", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["sha256"] == sha(data) and Path(got["path"]).read_bytes() == data
    listed = json.loads(runner.invoke(app, ["weights", "list", "--json"]).stdout)
    assert listed["registered"][0]["cached"] == got["path"]
    r = runner.invoke(app, ["weights", "verify", "tiny", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["sha256_check"] == "ok (registry pin of tiny)"
    r = runner.invoke(app, ["weights", "verify", got["path"], "--json"])
    assert json.loads(r.stdout)["registered_as"] == "tiny"
    assert runner.invoke(app, ["weights", "list"]).exit_code == 0


def test_cli_errors_are_one_line(fake_hub, registry, monkeypatch, tmp_path):
    data = weights_bytes(tmp_path, 0)
    fake_hub.add(REPO, C1, "model.safetensors", data)
    cases = [
        (["weights", "download", f"hf-hub:{REPO}@{C1}", "--sha256", "e" * 64], "sha256 mismatch"),
        (["weights", "download", "no-such-name"], "cannot download 'no-such-name'"),
    ]
    for args, expected in cases:
        r = runner.invoke(app, args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.exit_code == 1 and lines[0].startswith("error:") and expected in lines[0], r.output
        assert len(lines) <= 2 and "Traceback" not in r.output
    assert "hf-hub:ORG/REPO[@REVISION]" in r.stderr  # brackets in hints survive rich markup
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    r = runner.invoke(app, ["weights", "download", f"hf-hub:{REPO}@{C2}"])
    assert r.exit_code == 1 and "cannot reach" in r.stderr and "HF_ENDPOINT" in r.stderr
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = runner.invoke(app, ["weights", "download", f"hf-hub:{REPO}@{C2}"])
    assert r.exit_code == 1 and "HF_HUB_OFFLINE=1" in r.stderr
    assert os.environ["HF_HUB_OFFLINE"] == "1"
