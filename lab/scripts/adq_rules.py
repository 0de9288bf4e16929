# Frozen lab record: ran at commit 304b58c (2026-12-06) and the working tree just before it; kept as run, not maintained. See lab/README.md.
# Traces (issue 36), 2026-12-06, fourth study (adq_detection.py), end to end on cached maps: rule D
# (adq's llr alone, no bias) refitted on adq maps made with each gain margin (adq_recache.py), judged
# by the rule of traces_rules_robust.py (admissible: q70 and halved fit-set photos not below the
# network beyond the paired interval; then 5-fold CV F1 on the clean fit set) and then, once, on
# history val and PSBattles: fused against the network, and the new margin against the shipped one.
# Second question, fixed before its numbers (after the margin's: 0.12 gains on every row): how adq turns
# block evidence into its map. Shipped: each block's posterior, then a 3x3 median. Candidates: the
# blocks' log likelihood ratios averaged over k x k blocks and multiplied by s before the prior
# (mean:3:1, mean:3:3, mean:5:5, mean:3:9; s = k is the square root of the summed evidence's
# scale, s = k^2 the full sum), all with margin 0.12; chosen by the same rule (admissible, then the
# best CV F1 on the fit set, ties within 0.002 to the simpler), validation printed once for all.
# Result: CV F1 median 0.5087, mean:3:1 0.5120, mean:3:3 0.5137, mean:5:5 0.5082, mean:3:9 0.5073;
# 3:1 and 3:3 tie within 0.002: mean:3:1 (the plain mean) chosen.
# Third question, fixed before its numbers: with margin 0.12 and mean:3:1, do the first 27 AC
# frequencies (zig-zag 1..27) beat the first 15? Same rule.
# Result (f27, margin 0.12, 2 frequencies): CV F1 0.5167 against 0.5120, but adq_detection.py with 27
# frequencies shows that decision declaring 13-22% of single-compressed training photos double: not
# admissible as calibrated. Recalibrated on the same training table (most doubles found with false
# alarms <= 1%): margin 0.15 and 3 frequencies (found 0.905 above; false alarms 1.0% / 0.5%). The
# question is then asked again with that decision (cache f27b), same rule.
# Fourth question, fixed before its numbers: do Cb and Cr add evidence? Each chroma channel's
# histograms fitted like the luminance's (its own table, the same margin), the log likelihood ratios of
# its double-compressed frequencies added to every luminance block the chroma block covers; the photo's
# decision stays the luminance's (as calibrated by adq_detection.py). Same rule, against the best
# of the questions above.
# Results: f27b (27 frequencies, 0.15 on 3) CV F1 0.5148 against mean:3:1's 0.5120: chosen (+0.0028).
# Chroma (with 15 frequencies, 0.12 on 2, mean:3:1; code in the working tree only, reverted): CV F1
# 0.5087 against 0.5120: not adopted. adq version 2 = f27b (commit 304b58c).
# Run: .venv/bin/python lab/scripts/adq_rules.py data/cache/g0.25 data/cache/g0.12
#      .venv/bin/python lab/scripts/adq_rules.py data/cache/g0.12 data/cache/m3x1 (m3x3, m5x5, m3x9)
"""Rule D with adq maps of two gain margins (lab script; see the header)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import traces_rules as tr  # noqa: E402
import traces_rules_robust as rr  # noqa: E402


def load(cache: str, name: str) -> dict:
    tr.CACHE = cache
    return tr.load(name)


def main(*caches: str) -> None:
    tr.features = rr.features
    fused = {}
    for cache in caches:
        fit_set = load(cache, "fit")
        n = len(fit_set["label"])
        folds = np.arange(n) % 5
        f1s = []
        for k in range(5):
            beta = tr.fit(fit_set, np.flatnonzero(folds != k), "D")
            f1s += tr.scores(fit_set, np.flatnonzero(folds == k), "D", beta)["f1s"]
        beta = tr.fit(fit_set, np.arange(n), "D")
        line = f"{cache}: adq applies {fit_set['applies'][:, 0].mean():.3f}; CV F1 {np.mean(f1s):.4f}; w {beta[1]:.3f}"
        for name in ("fitj70", "fitr05", "hv", "ps"):
            d = load(cache, name)
            idx = np.arange(len(d["label"]))
            a, b = tr.scores(d, idx, "D", None), tr.scores(d, idx, "D", beta)
            m, lo, hi = tr.paired(a["f1s"], b["f1s"])
            fused[(cache, name)] = b["f1s"]
            line += (
                f"\n  {name}: net {a['f1']:.4f} fused {b['f1']:.4f} paired {m:+.4f} [{lo:+.4f}, {hi:+.4f}]"
                f" auth px {a['authentic_px']:.4f} -> {b['authentic_px']:.4f}"
            )
        print(line, flush=True)
    if len(caches) == 2:
        for name in ("fitj70", "fitr05", "hv", "ps"):
            m, lo, hi = tr.paired(fused[(caches[0], name)], fused[(caches[1], name)])
            print(f"{name}: {caches[1]} - {caches[0]}: {m:+.4f} [{lo:+.4f}, {hi:+.4f}]")


if __name__ == "__main__":
    main(*sys.argv[1:])
