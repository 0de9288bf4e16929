# Frozen lab record: ran at commit 77816ba (2026-11-26); kept as run, not maintained. See lab/README.md.
"""Train only the duplication cue of a ``-dup`` model on top of frozen trained weights.

    python scripts/fit_dup_cue.py weights/imlscan-sparsevit-t-v23.safetensors \\
        data/synth-cuefit/pairs.json runs/v17.safetensors --epochs 40

Why: the cue's correlations need no gradient and its MLP is small, so with the encoder frozen
each image's cue scores and fused head features can be computed once (paper protocol, 512x512)
and the MLP fitted over many epochs in minutes on a CPU. End-to-end training computes the cue
afresh at every step: with keys every 2 pixels, a 512x512 forward pass takes about 1 s on 2
cores, 15 times the network's own cost. The loss is the pixel BCE on the head's 1/16 grid
against each cell's tampered fraction; the last 10% of the images are held out and the epoch
with the lowest held-out loss is kept. ``--mark-sources`` labels a copy-move's source as
tampered too: NoSo's convention, which the cue (firing on both halves of a duplicate) can
follow and the generator's copy-only masks contradict. The encoder, the fusion and the
classifier stay exactly the input file's, so the result is that model plus a cue.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from imlscan.data.datasets import NEGATIVE
from imlscan.hub import file_sha256
from imlscan.imageio import load_image
from imlscan.metrics import pixel_auc
from imlscan.models import create_model
from imlscan.models.convert import load_grown
from imlscan.models.sparsevit import IMAGENET_MEAN, IMAGENET_STD
from imlscan.weights import model_from_file, save_weights

SIZE = 512


def features(model: torch.nn.Module, pairs: list[tuple[Path, Path | None]], batch: int = 8) -> dict:
    """Frozen inputs of the fit: fused head features (N, h, w, C) and cue inputs (N, 2h, 2w, k+1)."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    fused, cue_in = [], []
    for i in range(0, len(pairs), batch):
        xs = []
        for image, _ in pairs[i : i + batch]:
            rgb = cv2.resize(load_image(image).rgb, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
            xs.append((torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 - mean) / std)
        x = torch.stack(xs)
        with torch.no_grad():
            fused.append(model.head.fuse(*model.encoder(x)).half())
            top, contrast = model.head.dup.scores(x)
            cue_in.append(torch.cat([top, torch.log(contrast + 1e-3)[..., None]], dim=-1).half())
    return {"fused": torch.cat(fused), "cue": torch.cat(cue_in)}


def source_mask(mask: np.ndarray, sample: dict) -> np.ndarray:
    """Where a copy-move copied from, on the final image: the pasted mask mapped back through the
    sample's affine (recorded before post-processing, so its translation is scaled by any resize)."""
    f = float(np.prod([op["factor"] for op in sample.get("post", []) if op.get("op") == "resize"]))
    a = np.array(sample["affine"], dtype=np.float64)
    a[:, 2] *= f
    h, w = mask.shape
    inv = cv2.invertAffineTransform(a)
    return cv2.warpAffine(mask.astype(np.uint8), inv, (w, h), flags=cv2.INTER_NEAREST) > 0


def targets(pairs: list[tuple[Path, Path | None]], samples: list[dict] | None = None) -> torch.Tensor:
    """Tampered fraction of each head cell (N, h, w). With ``samples`` (the set's manifest), a
    copy-move's source is marked too, as NoSo and some public benchmarks mark it."""
    out = []
    for i, (_, mask_path) in enumerate(pairs):
        m = np.zeros((SIZE, SIZE), np.float32)
        if mask_path is not None:
            full = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127
            if samples is not None and samples[i]["kind"] == "copymove":
                full = full | source_mask(full, samples[i])
            m = cv2.resize(full.astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
        out.append(torch.from_numpy(cv2.resize(m, (SIZE // 16, SIZE // 16), interpolation=cv2.INTER_AREA)))
    return torch.stack(out)


def head_logits(
    model: torch.nn.Module, fused: torch.Tensor, cue_in: torch.Tensor, use_cue: bool = True
) -> torch.Tensor:
    """(N, h, w) logits of the head from cached inputs, exactly as ``SparseViT.forward`` makes them
    on the 1/16 grid."""
    dup = model.head.dup
    x = fused.float()
    if use_cue:
        y = dup.fc2(dup.act(dup.fc1(cue_in.float())))
        x = x + F.avg_pool2d(y.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    return model.head.classify(x)[:, 0]


def heldout(model: torch.nn.Module, d: dict, use_cue: bool = True) -> tuple[float, float]:
    """Held-out BCE and mean per-image AUC (images with tampered cells) on the 1/16 grid."""
    with torch.no_grad():
        lg = head_logits(model, d["fused"], d["cue"], use_cue)
        loss = F.binary_cross_entropy_with_logits(lg, d["target"]).item()
    aucs = [
        pixel_auc(lg[i].numpy(), d["target"][i].numpy() > 0.5) for i in range(len(lg)) if (d["target"][i] > 0.5).any()
    ]
    return loss, float(np.nanmean(aucs)) if aucs else float("nan")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("init", help="trained weights without the cue")
    ap.add_argument("pairs", type=Path, help="a pairs.json (synthetic training-split forgeries)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--model", default=None, help="the -dup variant (default: the file's variant + -dup)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None, help="save/load the frozen features here")
    ap.add_argument(
        "--mark-sources",
        action="store_true",
        help="label a copy-move's source as tampered too (needs the set's manifest.json beside the pairs)",
    )
    a = ap.parse_args(argv)
    t0 = time.time()
    base, meta = model_from_file(a.init)
    name = a.model or f"{meta.get('variant', 'sparsevit-t')}-dup"
    torch.manual_seed(a.seed)
    model = create_model(name).eval()
    load_grown(model, base.state_dict())
    root = a.pairs.parent
    pairs = [(root / p[0], None if p[1] == NEGATIVE else root / p[1]) for p in json.loads(a.pairs.read_text())]
    if a.cache and a.cache.is_file():
        d = torch.load(a.cache)
    else:
        d = features(model, pairs)
        if a.cache:
            torch.save(d, a.cache)
    samples = None
    if a.mark_sources:
        manifest = a.pairs.parent / "manifest.json"
        if not manifest.is_file():
            raise SystemExit(f"--mark-sources needs the set's manifest.json beside {a.pairs}")
        samples = json.loads(manifest.read_text())["samples"]
        if [root / x["image"] for x in samples] != [p[0] for p in pairs]:
            raise SystemExit("--mark-sources: manifest.json does not list the images of the pairs file in order")
    d = {"fused": d["fused"], "cue": d["cue"], "target": targets(pairs, samples)}
    n = len(d["target"])
    cut = n - max(1, n // 10)
    tr = {k: v[:cut] for k, v in d.items()}
    ho = {k: v[cut:] for k, v in d.items()}
    print(f"features of {n} images in {time.time() - t0:.0f} s; fitting on {cut}, holding out {n - cut}")
    before = heldout(model, ho, use_cue=False)
    print(f"held out without the cue: loss {before[0]:.4f}, AUC {before[1]:.4f}")
    params = list(model.head.dup.parameters())
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(a.seed)
    best = (before[0], 0, [p.detach().clone() for p in params])
    for epoch in range(1, a.epochs + 1):
        perm = torch.randperm(cut, generator=g)
        for i in range(0, cut, a.batch_size):
            idx = perm[i : i + a.batch_size]
            lg = head_logits(model, tr["fused"][idx], tr["cue"][idx])
            loss = F.binary_cross_entropy_with_logits(lg, tr["target"][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        loss_h, auc_h = heldout(model, ho)
        print(f"epoch {epoch}: held-out loss {loss_h:.4f}, AUC {auc_h:.4f}")
        if loss_h < best[0]:
            best = (loss_h, epoch, [p.detach().clone() for p in params])
    with torch.no_grad():
        for p, v in zip(params, best[2]):
            p.copy_(v)
    after = heldout(model, ho)
    print(
        f"kept epoch {best[1]}: held-out loss {after[0]:.4f} (without the cue {before[0]:.4f}), "
        f"AUC {after[1]:.4f} ({before[1]:.4f})"
    )
    fit = {
        "init": str(a.init),
        "init_sha256": file_sha256(a.init),
        "data": str(a.pairs),
        "images": n,
        "held_out": n - cut,
        "epochs": a.epochs,
        "kept_epoch": best[1],
        "lr": a.lr,
        "batch_size": a.batch_size,
        "seed": a.seed,
        "mark_sources": a.mark_sources,
        "heldout_loss_without_cue": round(before[0], 5),
        "heldout_loss": round(after[0], 5),
        "heldout_auc_without_cue": round(before[1], 5),
        "heldout_auc": round(after[1], 5),
    }
    prov = {**meta.get("provenance", {}), "cue_fit": fit}
    save_weights(
        model,
        a.out,
        name=a.out.stem,
        variant=name,
        preprocessing=meta.get("preprocessing"),
        provenance=prov,
        licence=meta.get("licence", "CC-BY-NC-4.0"),
        dtype=torch.float16,
    )
    print(f"wrote {a.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
