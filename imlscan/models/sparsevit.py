"""SparseViT (Su et al., AAAI 2025): a UniFormer encoder with sparse, dilated self-attention
and the LFF (learnable feature fusion) prediction head.

The module layout follows the authors' release so that their checkpoints map onto ours key by
key (see ``imlscan.models.convert``), with two deliberate differences:

* parameters the authors build but never use (a positional conv in every sparse block, two
  stage norms) are left out;
* any input size works. The sparse groups are defined by the stride ``S`` (tokens whose
  ``(row mod S, col mod S)`` agree attend to each other), the feature map is padded to a
  multiple of ``S`` inside the attention only, and padded tokens are masked out as keys, so a
  region's prediction never depends on that padding. At 512x512 the result equals the authors'
  model, whose groups are fixed for that size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SparseViTConfig:
    """Everything that determines the architecture; stored in every weights file."""

    depths: tuple[int, int, int, int] = (5, 8, 20, 7)
    dims: tuple[int, int, int, int] = (64, 128, 320, 512)
    head_dim: int = 64
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    # Stage 3 and 4 are cut into groups of blocks that share one sparsity rate; the LFF head
    # taps the end of every group (the paper: S = 8, 4, 2, 1 over 4 x 5 blocks, then 2, 1).
    stage3_groups: tuple[int, ...] = (5, 5, 5, 5)
    stage3_sparsity: tuple[int, ...] = (8, 4, 2, 1)
    stage4_groups: tuple[int, ...] = (4, 3)
    stage4_sparsity: tuple[int, ...] = (2, 1)
    drop_path_rate: float = 0.2
    layer_scale_init: float = 1e-6
    head_gamma_init: float = 1e-6
    # Optional duplication cue (not in the paper; see DuplicationCue): 0 leaves it out.
    dup_dim: int = 0
    dup_topk: int = 8
    dup_exclude: int = 3
    dup_key_stride: int = 8

    def __post_init__(self) -> None:
        if sum(self.stage3_groups) != self.depths[2] or sum(self.stage4_groups) != self.depths[3]:
            raise ValueError("stage3_groups/stage4_groups must add up to depths[2]/depths[3]")
        if len(self.stage3_groups) != len(self.stage3_sparsity) or len(self.stage4_groups) != len(self.stage4_sparsity):
            raise ValueError("each block group needs exactly one sparsity rate")
        if self.dims[2] % self.head_dim or self.dims[3] % self.head_dim:
            raise ValueError("dims[2] and dims[3] must be multiples of head_dim")
        if self.dup_dim < 0 or self.dup_topk < 1 or self.dup_exclude < 0:
            raise ValueError("dup_dim must be >= 0, dup_topk >= 1 and dup_exclude >= 0")
        if self.dup_key_stride not in (2, 4, 8):
            raise ValueError(f"dup_key_stride must be 2, 4 or 8 pixels, got {self.dup_key_stride}")

    def to_dict(self) -> dict:
        """Without the duplication cue its fields are left out, so such files read exactly as
        they did before the cue existed (and older imlscan versions can still load them)."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if not self.dup_dim:
            for k in ("dup_dim", "dup_topk", "dup_exclude", "dup_key_stride"):
                d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SparseViTConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SparseViT config keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def sparsity_schedule(self) -> tuple[list[int], list[int]]:
        """Per-block sparsity rates of stages 3 and 4."""
        s3 = [s for n, s in zip(self.stage3_groups, self.stage3_sparsity) for _ in range(n)]
        s4 = [s for n, s in zip(self.stage4_groups, self.stage4_sparsity) for _ in range(n)]
        return s3, s4


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class PatchEmbed(nn.Module):
    """Non-overlapping strided conv + LayerNorm (eps 1e-5, as in the authors' code).

    Inputs whose size is not a multiple of the stride are zero-padded at the bottom/right,
    so every input pixel lands in exactly one token and the output map stays aligned.
    """

    def __init__(self, in_chans: int, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.patch, (-w) % self.patch
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvBlock(nn.Module):
    """UniFormer's local block (stages 1-2): depthwise conv 'attention' over a 5x5 window."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x + drop_path(self.conv2(self.attn(self.conv1(self.norm1(x)))), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


def group_strides(s: int, h: int, w: int) -> tuple[int, int]:
    """Row and column strides of the dilated groups on an ``h x w`` map.

    A stride larger than the map gives the same groups as a stride equal to it (every token
    alone along that axis), so it is clamped: no group is then made only of padding.
    """
    return min(s, h), min(s, w)


def sparse_group(x: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, H, W, C) -> (B*sh*sw, ceil(H/sh)*ceil(W/sw), C): one row of tokens per dilated group.

    Group ``(a, b)`` holds the tokens at rows ``a, a+S, ...`` and columns ``b, b+S, ...``.
    Returns the grouped tokens and, when padding was needed, a key mask (True = real token)
    broadcastable to the attention matrix ``(groups, heads, queries, keys)``.
    """
    b, h, w, c = x.shape
    sh, sw = group_strides(s, h, w)
    ph, pw = (-h) % sh, (-w) % sw
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hs, ws = (h + ph) // sh, (w + pw) // sw
    x = x.reshape(b, hs, sh, ws, sw, c).permute(0, 2, 4, 1, 3, 5).reshape(b * sh * sw, hs * ws, c)
    if not (ph or pw):
        return x, None
    valid = torch.zeros(h + ph, w + pw, dtype=torch.bool, device=x.device)
    valid[:h, :w] = True
    valid = valid.view(hs, sh, ws, sw).permute(1, 3, 0, 2).reshape(sh * sw, 1, 1, hs * ws)
    return x, valid.repeat(b, 1, 1, 1)


def sparse_ungroup(x: torch.Tensor, s: int, b: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`sparse_group` (drops the padding)."""
    c = x.shape[-1]
    sh, sw = group_strides(s, h, w)
    hs, ws = -(-h // sh), -(-w // sw)
    x = x.reshape(b, sh, sw, hs, ws, c).permute(0, 3, 1, 4, 2, 5).reshape(b, hs * sh, ws * sw, c)
    return x[:, :h, :w]


class Attention(nn.Module):
    def __init__(self, dim: int, head_dim: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = dim // head_dim
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        g, n, c = x.shape
        qkv = self.qkv(x).view(g, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=key_mask)
        return self.proj(x.transpose(1, 2).reshape(g, n, c))


class Mlp(nn.Module):
    """Token MLP with a 3x3 depthwise conv between fc1 and GELU (positional information)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)  # (B, H, W, hidden)
        x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc2(self.act(x))


class SparseBlock(nn.Module):
    """Transformer block whose self-attention runs inside dilated groups of stride ``sparsity``.

    Works on channels-last tokens ``(B, H, W, C)`` so that stages 3-4 never transpose between
    blocks. ``layer_scale_folded`` is set by :func:`imlscan.models.fuse.fuse_for_inference`
    once the gammas have been multiplied into ``attn.proj`` and ``mlp.fc2``.
    """

    def __init__(self, dim: int, head_dim: int, sparsity: int, cfg: SparseViTConfig, drop_path: float):
        super().__init__()
        self.sparsity = sparsity
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, head_dim, cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        self.gamma_1 = nn.Parameter(torch.full((dim,), cfg.layer_scale_init))
        self.gamma_2 = nn.Parameter(torch.full((dim,), cfg.layer_scale_init))
        self.drop_path = drop_path
        self.layer_scale_folded = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        groups, key_mask = sparse_group(self.norm1(x), self.sparsity)
        a = sparse_ungroup(self.attn(groups, key_mask), self.sparsity, b, h, w)
        if self.layer_scale_folded:
            x = x + a
            return x + self.mlp(self.norm2(x))
        x = x + drop_path(self.gamma_1 * a, self.drop_path, self.training)
        return x + drop_path(self.gamma_2 * self.mlp(self.norm2(x)), self.drop_path, self.training)


class Encoder(nn.Module):
    """UniFormer-style 4-stage encoder; returns the multi-scale taps the LFF head fuses
    (stage 3 and 4 taps as channels-last ``(B, H, W, C)`` tensors)."""

    def __init__(self, cfg: SparseViTConfig):
        super().__init__()
        d = cfg.dims
        self.patch_embed1 = PatchEmbed(3, d[0], 4)
        self.patch_embed2 = PatchEmbed(d[0], d[1], 2)
        self.patch_embed3 = PatchEmbed(d[1], d[2], 2)
        self.patch_embed4 = PatchEmbed(d[2], d[3], 2)
        # On the CPU even when the model is built on the meta device (weights files are checked so).
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()
        o = [0, cfg.depths[0], sum(cfg.depths[:2]), sum(cfg.depths[:3])]
        s3, s4 = cfg.sparsity_schedule()
        self.blocks1 = nn.ModuleList(ConvBlock(d[0], cfg.mlp_ratio, dpr[o[0] + i]) for i in range(cfg.depths[0]))
        self.blocks2 = nn.ModuleList(ConvBlock(d[1], cfg.mlp_ratio, dpr[o[1] + i]) for i in range(cfg.depths[1]))
        self.blocks3 = nn.ModuleList(
            SparseBlock(d[2], cfg.head_dim, s3[i], cfg, dpr[o[2] + i]) for i in range(cfg.depths[2])
        )
        self.blocks4 = nn.ModuleList(
            SparseBlock(d[3], cfg.head_dim, s4[i], cfg, dpr[o[3] + i]) for i in range(cfg.depths[3])
        )
        self.norm3 = nn.LayerNorm(d[2], eps=1e-6)
        self.norm4 = nn.LayerNorm(d[3], eps=1e-6)
        self.taps3 = set(_cumsum(cfg.stage3_groups)[:-1])
        self.taps4 = set(_cumsum(cfg.stage4_groups)[:-1])

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        x = self.patch_embed1(x)
        for blk in self.blocks1:
            x = blk(x)
        x = self.patch_embed2(x)
        for blk in self.blocks2:
            x = blk(x)
        x = self.patch_embed3(x).permute(0, 2, 3, 1)  # a view: PatchEmbed's memory is NHWC
        f3 = []
        for i, blk in enumerate(self.blocks3, 1):
            x = blk(x)
            if i in self.taps3:
                f3.append(x)
        f3.append(self.norm3(x))
        x = self.patch_embed4(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        f4 = []
        for i, blk in enumerate(self.blocks4, 1):
            x = blk(x)
            if i in self.taps4:
                f4.append(x)
        f4.append(self.norm4(x))
        return f3, f4


def neighbour_index(
    h: int,
    w: int,
    r: int,
    device: torch.device | str = "cpu",
    *,
    keys: tuple[int, int] | None = None,
    step: int = 1,
) -> torch.Tensor:
    """For every cell of an ``h x w`` query grid, the flat indices of the keys within Chebyshev
    radius ``r`` cells of it: ``(h*w, (2*r*step+1)^2)``. Keys lie on a ``keys`` grid (default:
    the query grid) ``step`` times denser, query ``(i, j)`` centred on key ``(i*step, j*step)``;
    positions off the key grid repeat that centre key (itself a neighbour).

    Why: scattering into these few columns is far cheaper than comparing every pair of
    coordinates (that comparison took 80% of the cue's time on a 1024-pixel tile)."""
    kh, kw = keys or (h, w)
    rows = (torch.arange(h, device=device) * step).repeat_interleave(w)[:, None]
    cols = (torch.arange(w, device=device) * step).repeat(h)[:, None]
    rk = r * step
    d = torch.arange(-rk, rk + 1, device=device)
    dr, dc = d.repeat_interleave(2 * rk + 1)[None], d.repeat(2 * rk + 1)[None]
    nr, nc = rows + dr, cols + dc
    ok = (nr >= 0) & (nr < kh) & (nc >= 0) & (nc < kw)
    return torch.where(ok, nr * kw + nc, rows * kw + cols)


KEY_STRIDES = (2, 4, 8)


class DuplicationCue(nn.Module):
    """Does this content occur elsewhere in the image? For every 8x8-pixel cell, the ``topk``
    highest zero-mean normalized cross-correlations (ZNCC) of the 16x16 patch centred on it with
    the patches centred every ``key_stride`` pixels outside its ``(2 * exclude + 1)^2``-cell
    neighbourhood, plus the patch's contrast, embedded by a small MLP and pooled to the head's
    1/16 grid.

    Why: a copy-move pasted without scaling or rotation leaves no resampling trace, only content
    that occurs twice, and every model trained without this cue found those hardest. Learned
    encoder features were tried first and never singled out the copy: a forensic encoder
    describes traces, not content. Pixel patches do. ZNCC ignores the gain and offset a forger
    applies to blend the copy in. The contrast input lets the MLP discount flat patches, which
    match everything. Sorted scores, as in BusterNet's percentile pooling, let it tell one sharp
    duplicate from many weak ones. Keys denser than the cells find copies moved by any distance:
    on NoSo the untrained top-1 score reaches pixel AUC 0.790 with 2-pixel keys, 0.716 with
    8-pixel ones. The descriptors are fixed, so the scores carry no gradient; only the MLP learns.
    Its last layer starts at zero, so a model grown from weights without the cue predicts exactly
    what those weights did. Computed in fp32, in query chunks of at most ``max_elements``
    similarities.
    """

    def __init__(
        self, out_dim: int, dim: int, topk: int, exclude: int, key_stride: int = 8, max_elements: int = 1 << 27
    ):
        super().__init__()
        if key_stride not in KEY_STRIDES:
            raise ValueError(f"key_stride must be one of {KEY_STRIDES}, got {key_stride}")
        self.topk, self.exclude, self.key_stride, self.max_elements = topk, exclude, key_stride, max_elements
        self.fc1 = nn.Linear(topk + 1, dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim, out_dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    @staticmethod
    def descriptors(x: torch.Tensor, stride: int = 8) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """(B, 3, H, W) -> unit-norm zero-mean descriptors (B, N, 64) of the 16x16 patches (2x2
        averaged) every ``stride`` pixels, their contrast (B, N), and the grid's size. At stride 8
        that grid is the cells': (ceil(H/16)*2, ceil(W/16)*2), the head's 1/16 grid doubled."""
        h, w = x.shape[-2:]
        g = x.float().mean(1, keepdim=True)
        g = F.pad(g, (0, (-w) % 16, 0, (-h) % 16), mode="replicate")
        g = F.pad(F.avg_pool2d(g, 2), (2, 2, 2, 2), mode="replicate")
        s = stride // 2
        gh, gw = (g.shape[-2] - 8) // s + 1, (g.shape[-1] - 8) // s + 1
        p = F.unfold(g, 8, stride=s).transpose(1, 2)
        p = p - p.mean(-1, keepdim=True)
        norm = p.norm(dim=-1)
        return p / (norm[..., None] + 0.01), norm / 8.0, gh, gw

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) image -> ((B, gh, gw, topk) sorted ZNCC, best first, missing ranks -1;
        (B, gh, gw) patch contrast) on the 8-pixel cell grid."""
        with torch.autocast(x.device.type, enabled=False):
            q, contrast, gh, gw = self.descriptors(x)
            keys, kh, kw = q, gh, gw
            if self.key_stride != 8:
                keys, _, kh, kw = self.descriptors(x, self.key_stride)
            b, n, _ = q.shape
            near = neighbour_index(gh, gw, self.exclude, x.device, keys=(kh, kw), step=8 // self.key_stride)
            k = min(self.topk, keys.shape[1])
            step = max(1, self.max_elements // max(1, b * keys.shape[1]))
            out = []
            for s in range(0, n, step):
                e = min(s + step, n)
                sim = q[:, s:e] @ keys.transpose(1, 2)
                sim.scatter_(-1, near[s:e].expand(b, -1, -1), -1.0)
                out.append(sim.topk(k, dim=-1).values)
            top = torch.cat(out, dim=1)
            if k < self.topk:
                top = F.pad(top, (0, self.topk - k), value=-1.0)
        return top.reshape(b, gh, gw, self.topk), contrast.reshape(b, gh, gw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalized image -> (B, ceil(H/16), ceil(W/16), out_dim) channels-last."""
        top, contrast = self.scores(x)
        feats = torch.cat([top, torch.log(contrast + 1e-3)[..., None]], dim=-1).to(self.fc1.weight.dtype)
        y = self.fc2(self.act(self.fc1(feats)))
        return F.avg_pool2d(y.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)


class LFFHead(nn.Module):
    """Learnable feature fusion: project stage-3 taps to the stage-4 width, upsample stage-4
    taps to 1/16, weight each tap per channel (gammas, init 1e-6), sum, LayerNorm, 1x1 conv.

    The 1x1 convs keep the authors' ``Conv2d`` parameters but run as matrix products on
    channels-last tokens.
    """

    def __init__(self, in_dim: int, dim: int, n3: int, n4: int, gamma_init: float, dup: DuplicationCue | None = None):
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(in_dim, dim, 1) for _ in range(n3))
        self.gamma = nn.Parameter(torch.full((n3 + n4, dim), gamma_init))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.classifier = nn.Conv2d(dim, 1, 1)
        self.dup = dup

    def forward(
        self, f3: list[torch.Tensor], f4: list[torch.Tensor], extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``extra``: channels-last features on the 1/16 grid added to the fused taps (the cue)."""
        x = self.fuse(f3, f4)
        return self.classify(x if extra is None else x + extra)

    def fuse(self, f3: list[torch.Tensor], f4: list[torch.Tensor]) -> torch.Tensor:
        """The weighted sum of the taps on the 1/16 grid, channels-last (before the LayerNorm)."""
        h, w = f3[0].shape[1:3]
        feats = [F.linear(f, p.weight.flatten(1), p.bias) for p, f in zip(self.proj, f3)]
        feats += [
            F.interpolate(f.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
            for f in f4
        ]
        x = feats[0] * self.gamma[0]
        for g, f in zip(self.gamma[1:], feats[1:]):
            x = x + g * f
        return x

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Fused channels-last features -> ``B x 1 x h x w`` logits on the 1/16 grid."""
        x = F.linear(self.norm(x), self.classifier.weight.flatten(1), self.classifier.bias)
        return x.permute(0, 3, 1, 2)


class SparseViT(nn.Module):
    """SparseViT: ``forward(x)`` maps ImageNet-normalized RGB ``B x 3 x H x W`` to tamper
    logits ``B x 1 x H x W`` (sigmoid gives the probability)."""

    def __init__(self, cfg: SparseViTConfig | None = None):
        super().__init__()
        self.cfg = cfg or SparseViTConfig()
        self.encoder = Encoder(self.cfg)
        self.head = LFFHead(
            self.cfg.dims[2],
            self.cfg.dims[3],
            len(self.cfg.stage3_groups),
            len(self.cfg.stage4_groups),
            self.cfg.head_gamma_init,
            DuplicationCue(
                self.cfg.dims[3], self.cfg.dup_dim, self.cfg.dup_topk, self.cfg.dup_exclude, self.cfg.dup_key_stride
            )
            if self.cfg.dup_dim
            else None,
        )
        self.apply(_init_weights)
        if self.head.dup is not None:
            nn.init.zeros_(self.head.dup.fc2.weight)

    def freeze_stages(self, n: int) -> None:
        """Freeze the first ``n`` encoder stages (0-4), as mmseg's ``frozen_stages`` does: their
        parameters stop learning and their BatchNorm statistics stop moving, so fine-tuning on
        synthetic data cannot retune the low-level trace extractors the earlier training made.
        The setting survives ``train()``, which would otherwise put the BatchNorms back in training mode."""
        if not 0 <= n <= 4:
            raise ValueError(f"can freeze 0 to 4 stages, not {n}")
        self.frozen_stages = n
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)

    def _frozen_modules(self) -> list[nn.Module]:
        e, n = self.encoder, getattr(self, "frozen_stages", 0)
        if n == 4:
            return [e]
        mods: list[nn.Module] = []
        for k in range(1, n + 1):
            mods += [getattr(e, f"patch_embed{k}"), getattr(e, f"blocks{k}")]
        return [*mods, e.norm3] if n == 3 else mods

    def train(self, mode: bool = True) -> SparseViT:
        super().train(mode)
        for m in self._frozen_modules():
            m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        extra = self.head.dup(x) if self.head.dup is not None else None
        logits = self.head(*self.encoder(x), extra)
        # The 1/16 map covers ceil(H/16)*16 pixels: upsample to that, then crop, so every
        # logit stays over the pixels it was computed from (at 512x512 this is a plain resize).
        ch, cw = logits.shape[-2] * 16, logits.shape[-1] * 16
        logits = F.interpolate(logits, size=(ch, cw), mode="bilinear", align_corners=False)
        return logits[..., :h, :w]


def _cumsum(xs: tuple[int, ...]) -> list[int]:
    out, t = [], 0
    for v in xs:
        t += v
        out.append(t)
    return out


def _norm_2d(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: int | tuple[int, int] = 512, count_bias: bool = True) -> int:
    """Multiply-accumulates of one forward pass at ``size``: matmuls and convs as counted by
    PyTorch's FLOP counter (FLOPs / 2), plus the two attention products (QK^T and AV), which
    the counter does not see inside the CPU attention kernel. ``count_bias`` adds one MAC per
    output element of every biased conv/linear layer, the convention of thop, with which the
    published figures (46.2 G for sparsevit-b at 512) were counted."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w = (size, size) if isinstance(size, int) else size
    extra_macs = 0

    def count_attention(module: nn.Module, args: tuple, _out: torch.Tensor) -> None:
        nonlocal extra_macs
        g, n, c = args[0].shape
        extra_macs += 2 * g * n * n * c

    def count_bias_adds(module: nn.Module, _args: tuple, out: torch.Tensor) -> None:
        nonlocal extra_macs
        extra_macs += out.numel()

    hooks = [m.register_forward_hook(count_attention) for m in model.modules() if isinstance(m, Attention)]
    if count_bias:
        hooks += [
            m.register_forward_hook(count_bias_adds)
            for m in model.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None
        ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, h, w))
    finally:
        model.train(was_training)
        for hk in hooks:
            hk.remove()
    return counter.get_total_flops() // 2 + extra_macs


__all__ = [
    "DuplicationCue",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SparseViT",
    "SparseViTConfig",
    "count_macs",
    "count_parameters",
    "sparse_group",
    "sparse_ungroup",
]
