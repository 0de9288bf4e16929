"""The fusion rule: what it adds, what it leaves alone, how it is fitted and stored."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imlscan.errors import UsageError
from imlscan.scanning.fusion import FusionRule, fit_rule, fuse_traces, sample_pixels
from imlscan.scanning.traces import TRACE_VERSIONS, TraceResult


def _trace(name: str, m: np.ndarray | None, applies: bool = True, fusable: bool = True) -> TraceResult:
    return TraceResult(name=name, applies=applies, reason="", explanation="", map=m, fusable=fusable)


def _case(rng: np.random.Generator, h: int = 40, w: int = 50):
    """A forgery where the network is unsure everywhere (p = 0.3) and the 'adq' trace marks the
    forged block exactly, 'noise' is random, and 'grid' does not apply."""
    mask = np.zeros((h, w), bool)
    y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
    mask[y : y + h // 3, x : x + w // 3] = True
    prob = np.full((h, w), 0.3, np.float32)
    traces = {
        "adq": _trace("adq", mask.astype(np.float32)),
        "noise": _trace("noise", rng.random((h, w)).astype(np.float32)),
        "grid": _trace("grid", None, applies=False),
    }
    return prob, traces, mask


def test_no_rule_or_no_applicable_trace_leaves_the_map_bit_for_bit():
    prob = np.linspace(0, 1, 30 * 40, dtype=np.float32).reshape(30, 40)
    rule = FusionRule(terms={"adq": (1.0, 4.0), "grid": (0.5, 2.0)})
    png_like = {"adq": _trace("adq", None, applies=False), "ela": _trace("ela", np.ones_like(prob), fusable=False)}
    for traces, r in (({}, rule), (png_like, rule), ({"adq": _trace("adq", np.ones_like(prob))}, None)):
        fused, contributions = fuse_traces(prob, traces, r)
        assert fused is prob and contributions == {}


def test_a_term_adds_its_logit_where_the_trace_applies():
    prob = np.full((4, 4), 0.5, np.float32)
    m = np.zeros((4, 4), np.float32)
    m[:2] = 1.0
    fused, contributions = fuse_traces(prob, {"adq": _trace("adq", m)}, FusionRule(terms={"adq": (0.0, 4.0)}))
    # logit(0.5) = 0; +4 * (1 - 0.5) = +2 where the trace fires, -2 where it does not
    assert np.allclose(fused[:2], 1 / (1 + np.exp(-2.0)), atol=1e-6)
    assert np.allclose(fused[2:], 1 / (1 + np.exp(2.0)), atol=1e-6)
    assert contributions == {"adq": 0.0}
    moved: dict = {}
    fuse_traces(prob, {"adq": _trace("adq", m)}, FusionRule(terms={"adq": (0.0, 4.0)}), moved)
    # a mean of zero hides that the term raised half of the photo by 2 logits and lowered the rest
    assert moved == {"adq": {"raised_share": 0.5, "lowered_share": 0.5}}


def test_fit_finds_the_informative_trace_and_is_deterministic(rng):
    samples = [_case(np.random.default_rng(i)) for i in range(30)]
    rule = fit_rule(samples, ["adq", "noise", "grid"], pixels_per_image=512, penalty=0.01, seed=3)
    again = fit_rule(samples, ["adq", "noise", "grid"], pixels_per_image=512, penalty=0.01, seed=3)
    assert rule.to_dict() == again.to_dict()
    assert "grid" not in rule.terms  # never applied: no term
    assert rule.terms["adq"][1] > 4.0 and abs(rule.terms["noise"][1]) < 1.0
    assert rule.fitted["log_loss_fused"] < rule.fitted["log_loss_network_alone"]
    # The rule remembers the trace versions it was fitted on; a rule without them is version 1's.
    assert rule.fitted["trace_versions"] == {n: TRACE_VERSIONS[n] for n in ("adq", "noise", "grid")}
    assert rule.stale_traces() == {}
    assert FusionRule(terms=rule.terms).stale_traces() == {"adq": (1, TRACE_VERSIONS["adq"])}
    fused, _ = fuse_traces(*samples[0][:2], rule)
    mask = samples[0][2]
    assert (fused[mask] > 0.5).mean() > 0.95 and (fused[~mask] > 0.5).mean() < 0.05


def test_rule_round_trips_through_json_and_refuses_bad_entries():
    rule = FusionRule(terms={"adq": (0.25, 3.5), "noise": (-0.1, 1.0)}, fitted={"dataset": "x"})
    back = FusionRule.of({"fusion": json.loads(json.dumps(rule.to_dict()))})
    assert back == rule and FusionRule.of({}) is None
    for bad in (
        {"terms": {"nope": {"bias": 0, "weight": 1}}},
        {"terms": {"adq": {"bias": "nan", "weight": 1}}},
        {"terms": {"adq": {"bias": 0, "weight": 1e9}}},
        {"terms": {"adq": {"bias": 0}}},
        {"terms": {"adq": {"bias": 0, "weight": 1}}, "version": 99},
    ):
        with pytest.raises(UsageError):
            FusionRule.from_dict(bad)


def test_sample_pixels_draws_half_inside_the_mask_weighted_back_to_the_true_shares(rng):
    prob, traces, mask = _case(rng, 64, 64)
    off, cols, y, w, used = sample_pixels(prob, traces, mask, ["adq", "grid"], rng, k=200)
    assert used == ["adq"] and y.sum() == 100 and len(y) == 200
    assert (cols[:, 0] == 1).all() and (cols[:, 2] == 0).all() and (cols[:, 3] == 0).all()
    assert np.array_equal(cols[:, 1] + 0.5, y)  # the adq map equals the mask here
    assert np.isclose(w.sum(), 200) and np.isclose(w[y == 1].sum() / w.sum(), mask.mean(), atol=1e-6)


def test_a_trace_that_applies_everywhere_and_says_nothing_gets_no_term(rng):
    """The balanced draw must not teach the rule to raise every pixel: a calibrated network plus a
    trace that always applies with an uninformative map should leave the map where it was."""
    samples = []
    for i in range(40):
        r = np.random.default_rng(i)
        prob = r.beta(1.0, 6.0, (48, 48)).astype(np.float32)  # mostly low: edits are rare
        mask = r.random(prob.shape) < prob  # and exactly as likely as the network says
        samples.append((prob, {"noise": _trace("noise", r.random(mask.shape).astype(np.float32))}, mask))
    rule = fit_rule(samples, ["noise"], pixels_per_image=256, penalty=0.01)
    bias, weight = rule.terms["noise"]
    assert abs(weight) < 0.3 and abs(bias) < 0.5, rule.terms


def test_logit_and_llr_features_read_confident_maps_as_strong_evidence():
    prob = np.full((2, 3), 0.5, np.float32)
    m = np.array([[0.99, 0.5, 0.2], [0.2, 0.2, 0.01]], np.float32)
    adq = TraceResult(name="adq", applies=True, reason="", explanation="", map=m, details={"prior": 0.2})
    logit_rule = FusionRule(terms={"adq": (0.0, 1.0)}, features={"adq": "logit"})
    fused, _ = fuse_traces(prob, {"adq": adq}, logit_rule)
    assert np.allclose(fused, np.clip(m, 0.01, 0.99), atol=1e-5)  # logit(0.5) + logit(m) = logit(m)
    llr_rule = FusionRule(terms={"adq": (0.0, 1.0)}, features={"adq": "llr"})
    fused, _ = fuse_traces(prob, {"adq": adq}, llr_rule)
    assert np.allclose(fused[m == np.float32(0.2)], 0.5, atol=1e-5)  # at the prior: no evidence, no change
    assert fused[0, 0] > 0.99 and fused[1, 2] < 0.1
    centered = FusionRule(terms={"adq": (0.0, 1.0)})
    assert fuse_traces(prob, {"adq": adq}, centered)[0][0, 0] < 0.7  # version 1 bounds the say to +-0.5 logits


def test_version_1_entries_still_read_and_new_entries_name_their_feature():
    v1 = {"version": 1, "terms": {"adq": {"bias": 0.1, "weight": 2.0}}}
    rule = FusionRule.from_dict(v1)
    assert rule.feature("adq") == "centered"
    for bad in (
        {"version": 1, "terms": {"adq": {"bias": 0.1, "weight": 2.0, "feature": "logit"}}},
        {"version": 2, "terms": {"adq": {"bias": 0.1, "weight": 2.0, "feature": "cubic"}}},
    ):
        with pytest.raises(UsageError):
            FusionRule.from_dict(bad)
    new = FusionRule(terms={"adq": (0.0, 1.5), "noise": (0.2, 0.3)}, features={"adq": "llr", "noise": "logit"})
    entry = json.loads(json.dumps(new.to_dict()))
    assert entry["version"] == 2 and entry["terms"]["adq"]["feature"] == "llr"
    assert FusionRule.from_dict(entry) == new


def test_an_llr_term_is_fitted_without_a_bias(rng):
    samples = []
    for i in range(20):
        prob, traces, mask = _case(np.random.default_rng(i))
        traces["adq"].map = np.where(mask, 0.95, 0.05).astype(np.float32)
        traces["adq"].details = {"prior": 0.1}
        samples.append((prob, traces, mask))
    rule = fit_rule(samples, ["adq", "noise"], pixels_per_image=512, penalty=0.01, features={"adq": "llr"})
    assert rule.terms["adq"][0] == 0.0 and rule.terms["adq"][1] > 0.5 and rule.feature("adq") == "llr"
    assert rule.feature("noise") == "centered"
