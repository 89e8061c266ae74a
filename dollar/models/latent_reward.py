"""The latent reward model R_lat(z, c) of METHOD.md: a small network on latents that learns a
pixel-space reward, so the student climbs it without backpropagating through the VAE decoder
or the reward itself."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class LatentRewardModel(ModelMixin, ConfigMixin):
    """Per-frame conv net (conv k/s -> GroupNorm -> SiLU -> conv 3x3/2 -> pool -> head),
    averaged over latent frames. With ``text_dim > 0`` the pooled feature attends to the text
    token states (the paper's text-conditioned variant)."""

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 12,
        hidden_channels: int = 64,
        first_kernel: int = 4,
        first_stride: int = 4,
        text_dim: int = 0,
        num_heads: int = 4,
        norm_num_groups: int = 8,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(
            latent_channels, hidden_channels, first_kernel, stride=first_stride, padding=(first_kernel - first_stride) // 2
        )
        self.norm1 = nn.GroupNorm(norm_num_groups, hidden_channels)
        self.conv2 = nn.Conv2d(hidden_channels, 2 * hidden_channels, 3, stride=2, padding=1)
        self.norm2 = nn.GroupNorm(norm_num_groups, 2 * hidden_channels)
        width = 2 * hidden_channels
        if text_dim:
            self.text_proj = nn.Linear(text_dim, width)
            self.cross_attention = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.head = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))

    def forward(self, latents: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        """Latents ``[B, C, T, h, w]`` (normalized, as the transformer sees them) -> rewards ``[B]``."""
        b, c, t, h, w = latents.shape
        x = latents.transpose(1, 2).reshape(b * t, c, h, w)
        x = F.silu(self.norm1(self.conv1(x)))
        x = F.silu(self.norm2(self.conv2(x)))
        x = x.mean((2, 3))  # [B*T, width]
        if self.config.text_dim:
            if encoder_hidden_states is None:
                raise ValueError("this latent reward model is text-conditioned: pass encoder_hidden_states")
            text = self.text_proj(encoder_hidden_states).repeat_interleave(t, dim=0)
            pad = encoder_hidden_states.abs().sum(-1).repeat_interleave(t, dim=0) == 0
            pad[:, 0] = False  # never mask every key
            attended, _ = self.cross_attention(x[:, None], text, text, key_padding_mask=pad)
            x = x + attended[:, 0]
        return self.head(x).view(b, t).mean(1)
