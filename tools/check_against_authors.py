"""Check imlscan's SparseViT against the authors' module at 512x512 (same weights -> same
logits). Their code is not part of imlscan: this script imports it from the published
``imdlbenco`` wheel, which you fetch yourself:

    pip download --no-deps imdlbenco -d /tmp/imdl && cd /tmp/imdl && unzip -q imdlbenco-*.whl
    python tools/check_against_authors.py /tmp/imdl

timm and IMDL-BenCo's registry are replaced by minimal stand-ins (their module only needs
``trunc_normal_``, ``DropPath``, ``to_2tuple`` and a no-op register decorator).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def _stub_modules() -> None:
    layers = types.ModuleType("timm.models.layers")
    layers.trunc_normal_ = nn.init.trunc_normal_
    layers.to_2tuple = lambda x: (x, x)

    class DropPath(nn.Identity):
        def __init__(self, *args, **kwargs):
            super().__init__()

    layers.DropPath = DropPath
    sys.modules.update(
        {"timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"), "timm.models.layers": layers}
    )
    registry = types.ModuleType("IMDLBenCo.registry")
    registry.MODELS = types.SimpleNamespace(register_module=lambda: lambda cls: cls)
    sys.modules.update({"IMDLBenCo": types.ModuleType("IMDLBenCo"), "IMDLBenCo.registry": registry})


def main(root: str) -> None:
    from imlscan.models import convert_official_checkpoint, create_model

    src = Path(root) / "IMDLBenCo" / "model_zoo" / "sparse_vit" / "sparse_vit.py"
    if not src.is_file():
        sys.exit(f"no {src}: unpack the imdlbenco wheel into {root} first (see --help)")
    _stub_modules()
    spec = importlib.util.spec_from_file_location("authors_sparse_vit", src)
    authors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(authors)

    torch.manual_seed(0)
    ref = authors.SparseViT().eval()
    with torch.no_grad():  # random weights everywhere, so that no branch hides behind 1e-6 gammas
        for name, p in ref.named_parameters():
            is_norm_scale = "norm" in name and name.endswith(".weight")
            p.copy_(torch.randn_like(p) * (0.5 if "gamma" in name else 0.05) + (1.0 if is_norm_scale else 0.0))
        for name, b in ref.named_buffers():
            if "running_var" in name:
                b.uniform_(0.5, 1.5)
            elif "running_mean" in name:
                b.normal_(0, 0.1)
    n_ref = sum(p.numel() for p in ref.parameters())
    ours = create_model("sparsevit-b").eval()
    ours.load_state_dict(convert_official_checkpoint({"model": ref.state_dict()}), strict=True)
    x = torch.randn(2, 3, 512, 512)
    with torch.no_grad():
        feats = list(ref.encoder_net(x).values())
        theirs = F.interpolate(ref.lmu(feats), size=(512, 512), mode="bilinear", align_corners=False)
        mine = ours(x)
    diff = (theirs - mine).abs().max().item()
    print(f"authors' parameters: {n_ref:,}; imlscan: {sum(p.numel() for p in ours.parameters()):,}")
    print(f"max |logit difference| at 512x512: {diff:.2e} (logit scale {theirs.abs().max().item():.2f})")
    sys.exit(0 if diff < 1e-4 else 1)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", nargs="?", default="/tmp/imdl", help="the folder the imdlbenco wheel was unpacked into")
    main(ap.parse_args().root)
