"""BLIP's image encoder: a ViT-B/16 or ViT-L/16 (Dosovitskiy et al., arXiv:2010.11929).

Matches salesforce/BLIP ``models/vit.py`` (itself timm 0.4.12's ``VisionTransformer`` without a head):
pre-norm blocks, one fused ``qkv`` projection with bias, exact-erf GELU, LayerNorm eps 1e-6, a learned
``[CLS]`` token and learned absolute position embedding, and a final LayerNorm. The output is the full token
sequence ``[B, 1 + N, D]``; ``[:, 0]`` is the global image feature.

Parameter names are the official ones (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``), so official checkpoints load with
no renaming.

Gradient checkpointing of the last ``grad_ckpt_layers`` blocks recomputes ``attn`` and ``mlp`` in the
backward pass, as fairscale's ``checkpoint_wrapper`` did in the original; the state-dict keys do not change.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import nn

from openblip.config import VisionConfig
from openblip.layers.attention import attention, merge_heads
from openblip.layers.linear import Linear
from openblip.layers.vit_layers import DropPath, Mlp, resize_pos_embed


class PatchEmbed(nn.Module):
    """Non-overlapping patches via a strided convolution (key ``patch_embed.proj``)."""

    def __init__(self, patch_size: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, D]


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = Linear(dim, dim * 3, bias=True)
        self.proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = attention(qkv[0], qkv[1], qkv[2])  # [B, H, N, Dh]
        return self.proj(merge_heads(out))


class Block(nn.Module):
    def __init__(self, cfg: VisionConfig, drop_path: float, use_checkpoint: bool) -> None:
        super().__init__()
        dim = cfg.width
        self.norm1 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.attn = Attention(dim, cfg.num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        self.use_checkpoint = use_checkpoint

    def _run(self, fn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(fn, x, use_reentrant=False)
        return fn(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self._run(self.attn, self.norm1(x)))
        x = x + self.drop_path(self._run(self.mlp, self.norm2(x)))
        return x


class VisionTransformer(nn.Module):
    """ViT image encoder returning ``[B, 1 + N, D]`` tokens after the final LayerNorm."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_size = cfg.patch_size
        self.image_size = cfg.image_size
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, cfg.width))
        # linear stochastic-depth schedule over the blocks (timm / BLIP)
        # computed on the CPU so that construction under `with torch.device("meta")` works (.tolist() needs data)
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.depth, device="cpu").tolist()
        first_ckpt = cfg.depth - cfg.grad_ckpt_layers
        self.blocks = nn.ModuleList(Block(cfg, rates[i], use_checkpoint=i >= first_ckpt) for i in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, last_n_blocks: int) -> None:
        """Checkpoint ``attn`` and ``mlp`` of the last ``last_n_blocks`` blocks (0 turns it off)."""
        depth = len(self.blocks)
        for i, blk in enumerate(self.blocks):
            blk.use_checkpoint = i >= depth - last_n_blocks

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Encode ``[B, 3, S, S]`` images.

        The original asserts that ``S`` equals the configured size; so do we, unless
        ``interpolate_pos_encoding`` asks to resize the position embedding on the fly.
        """
        h, w = pixel_values.shape[-2:]
        if (h, w) != (self.image_size, self.image_size) and not interpolate_pos_encoding:
            raise ValueError(
                f"image size {h}x{w} does not match the model's {self.image_size}x{self.image_size}; "
                "resize the input or pass interpolate_pos_encoding=True"
            )
        if h != w or h % self.patch_size:
            raise ValueError(f"image size {h}x{w} must be square and a multiple of the patch size {self.patch_size}")
        x = self.patch_embed(pixel_values.to(self.patch_embed.proj.weight.dtype))
        pos = self.pos_embed
        if x.shape[1] + 1 != pos.shape[1]:
            pos = resize_pos_embed(pos, x.shape[1])
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + pos
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)
