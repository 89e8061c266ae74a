"""The teacher: diffusers' WanTransformer3DModel plus an absolute position signal.

Wan knows where a token is only through rotary embeddings, which are relative: attention sees
offsets between tokens, never "this is frame 4" or "this is the left edge". Tiny models on a
small budget then learn appearance (colour, shape) but not motion: "growing" needs the frame
index, and "moving left" is, per frame, "the object is further left later in the clip". We
measured it (benchmarks/results/foundation.json, session notes): the RoPE-only teacher made
static objects for every motion word. CogVideoX and Latte add absolute 3-D sin-cos position
embeddings; this class adds the same signal to Wan's patch embeddings through a zero-initialised
projection, so

- with ``absolute_positions=False`` it *is* WanTransformer3DModel (same weights, same outputs),
- a stock Wan checkpoint loads into it unchanged (the projection starts at zero and the model
  computes exactly what Wan computes until fine-tuning moves it).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers import WanTransformer3DModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import get_3d_sincos_pos_embed
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers finds loadable classes by this name in the module)


class DollarWanTransformer3DModel(WanTransformer3DModel):
    """``WanTransformer3DModel`` with optional absolute 3-D sin-cos positions (see module doc)."""

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 40,
        attention_head_dim: int = 128,
        in_channels: int = 16,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 13824,
        num_layers: int = 40,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
        absolute_positions: bool = True,
    ) -> None:
        super().__init__(
            patch_size=patch_size,
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=in_channels,
            out_channels=out_channels,
            text_dim=text_dim,
            freq_dim=freq_dim,
            ffn_dim=ffn_dim,
            num_layers=num_layers,
            cross_attn_norm=cross_attn_norm,
            qk_norm=qk_norm,
            eps=eps,
            image_dim=image_dim,
            added_kv_proj_dim=added_kv_proj_dim,
            rope_max_seq_len=rope_max_seq_len,
            pos_embed_seq_len=pos_embed_seq_len,
        )
        inner_dim = num_attention_heads * attention_head_dim
        self.position_projection = None
        self._sincos_cache: dict[tuple, torch.Tensor] = {}
        if absolute_positions:
            if inner_dim % 16:
                raise ValueError(f"absolute_positions needs a width divisible by 16, got {inner_dim}.")
            self.position_projection = nn.Linear(inner_dim, inner_dim)
            nn.init.zeros_(self.position_projection.weight)
            nn.init.zeros_(self.position_projection.bias)
            self.patch_embedding.register_forward_hook(self._add_positions)

    def _add_positions(self, module: nn.Module, inputs, tokens: torch.Tensor) -> torch.Tensor:
        """Forward hook on the patch embedding: tokens [B, D, F, H, W] + projected sin-cos grid."""
        _, dim, frames, height, width = tokens.shape
        key = (dim, frames, height, width, str(tokens.device))
        if key not in self._sincos_cache:  # a fixed table per latent shape: compute it once
            self._sincos_cache[key] = get_3d_sincos_pos_embed(dim, (width, height), frames, device=tokens.device, output_type="pt")
        grid = self._sincos_cache[key]
        grid = self.position_projection(grid.to(self.position_projection.weight.dtype))  # [F, H*W, D]
        grid = grid.reshape(frames, height, width, dim).permute(3, 0, 1, 2)
        return tokens + grid.unsqueeze(0).to(tokens.dtype)

    @classmethod
    def from_wan(cls, wan: WanTransformer3DModel, absolute_positions: bool = True) -> DollarWanTransformer3DModel:
        """A model with ``wan``'s weights (and, before any training, its exact outputs)."""
        config = {k: v for k, v in wan.config.items() if not k.startswith("_")}
        config["absolute_positions"] = absolute_positions
        model = cls(**config)
        missing, unexpected = model.load_state_dict(wan.state_dict(), strict=False)
        if unexpected or any(not k.startswith("position_projection") for k in missing):
            raise ValueError(f"weights do not match: missing {missing}, unexpected {unexpected}")
        return model.to(wan.dtype)
