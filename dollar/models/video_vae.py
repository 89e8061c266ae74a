"""A small causal video autoencoder with the diffusers VAE interface.

Why not a stock diffusers VAE: at this size AutoencoderKLLTXVideo and AutoencoderKLWan (tried
first, same 8x8x4 compression) stalled near the per-clip mean (~15 dB after hundreds of steps
on two CPU cores). Space-and-time pixel-unshuffle followed by 3D convolutions with GroupNorm
trains in minutes and decodes a clip in tens of milliseconds. It speaks diffusers' words
(``encode(x).latent_dist``, ``decode(z).sample``, ``latents_mean``/``latents_std`` buffers,
``save_pretrained``), so a stock VAE (LTX, Wan, CogVideoX) drops into the pipeline in its place.

Causality: the clip is front-padded with copies of its first frame to a multiple of 4 and every
temporal convolution looks back only, so latent frame i depends on video frames up to 4i alone
(the 4k+1 convention: the first latent frame is the first video frame).

``latent_statistics`` reads the per-channel scale of the latents from this VAE or a stock one.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_utils import ModelMixin


class _CausalConv3d(nn.Conv3d):
    """3x3x3 convolution that looks back in time only (two past frames, none ahead)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 3, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (1, 1, 1, 1, 2, 0), mode="replicate"))


class _FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics per frame: normalising over time would leak the future."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = super().forward(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, c, h, w).transpose(1, 2)


class _ResBlock3d(nn.Module):
    def __init__(self, channels: int, groups: int = 8):
        super().__init__()
        self.norm1 = _FrameGroupNorm(groups, channels)
        self.conv1 = _CausalConv3d(channels, channels)
        self.norm2 = _FrameGroupNorm(groups, channels)
        self.conv2 = _CausalConv3d(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


def _unshuffle(x: torch.Tensor, pt: int, ps: int) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, C*pt*ps*ps, T/pt, H/ps, W/ps]."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // pt, pt, h // ps, ps, w // ps, ps)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * pt * ps * ps, t // pt, h // ps, w // ps)


def _shuffle(x: torch.Tensor, c: int, pt: int, ps: int) -> torch.Tensor:
    """Inverse of :func:`_unshuffle`."""
    b, _, t, h, w = x.shape
    x = x.reshape(b, c, pt, ps, ps, t, h, w)
    return x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, c, t * pt, h * ps, w * ps)


class _FoldTime(nn.Module):
    """[B, C, T, H, W] -> [B, C*pt, T/pt, H, W]: consecutive frames into channels (causal: latent
    frame i holds padded frames pt*i .. pt*i + pt - 1, which end at video frame pt*i)."""

    def __init__(self, pt: int):
        super().__init__()
        self.pt = pt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _unshuffle(x, self.pt, 1)


class CausalVideoAutoencoder(ModelMixin, ConfigMixin):
    """Pixel-unshuffle (time x ``patch_size_t``, space x ``patch_size``), 3D res blocks per level
    of ``block_out_channels`` and a stride-2 spatial stage between levels: total compression
    ``patch_size_t`` in time and ``patch_size * 2 ** (levels - 1)`` in space (the default: 4 x 2 = 8).

    ``full_rate_top``: the highest-resolution level runs at the video's frame rate in the encoder
    and the decoder; time is folded into channels after it (encoder) and unfolded before it
    (decoder), as stock video VAEs upsample time inside the decoder. Without it every level runs
    at the latent frame rate and the last layer writes four frames at once from one feature vector,
    which smears a moving object over its four positions."""

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 12,
        patch_size: int = 4,
        patch_size_t: int = 4,
        block_out_channels: tuple[int, ...] = (96, 128),
        layers_per_block: int = 2,
        norm_num_groups: int = 8,
        full_rate_top: bool = False,
    ):
        super().__init__()
        if len(block_out_channels) < 2:
            raise ValueError(f"block_out_channels needs at least two levels, got {tuple(block_out_channels)}")
        levels = list(block_out_channels)
        # Frames folded into channels by the pixel (un)shuffle, and by the fold after the top level.
        shuffled_t, folded_t = (1, patch_size_t) if full_rate_top else (patch_size_t, 1)
        unshuffled = in_channels * shuffled_t * patch_size * patch_size
        stages: list[nn.Module] = [nn.Conv3d(unshuffled, levels[0], 1)]
        for i, c in enumerate(levels):
            if i == 1 and full_rate_top:
                stages.append(_FoldTime(patch_size_t))
            if i:  # one stride-2 spatial stage between consecutive levels
                cin = levels[i - 1] * (folded_t if i == 1 else 1)
                stages.append(nn.Conv3d(cin, c, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
            stages += [_ResBlock3d(c, norm_num_groups) for _ in range(layers_per_block)]
        self.encoder = nn.Sequential(
            *stages, _FrameGroupNorm(norm_num_groups, levels[-1]), nn.SiLU(), _CausalConv3d(levels[-1], 2 * latent_channels)
        )
        self.decoder_in = _CausalConv3d(latent_channels, levels[-1])
        self.decoder_low = nn.Sequential(*[_ResBlock3d(levels[-1], norm_num_groups) for _ in range(layers_per_block)])
        # Levels between the lowest and the highest (none with two levels): upsample, convolve, res blocks.
        self.decoder_mid = nn.ModuleList(
            nn.Sequential(
                nn.Conv3d(levels[i + 1], levels[i], (1, 3, 3), padding=(0, 1, 1)),
                *[_ResBlock3d(levels[i], norm_num_groups) for _ in range(layers_per_block)],
            )
            for i in range(len(levels) - 2, 0, -1)
        )
        self.decoder_up = nn.Conv3d(levels[1], levels[0] * folded_t, (1, 3, 3), padding=(0, 1, 1))
        self.decoder_high = nn.Sequential(
            *[_ResBlock3d(levels[0], norm_num_groups) for _ in range(layers_per_block)],
            _FrameGroupNorm(norm_num_groups, levels[0]),
            nn.SiLU(),
            nn.Conv3d(levels[0], unshuffled, 1),
        )
        self.register_buffer("latents_mean", torch.zeros(latent_channels), persistent=True)
        self.register_buffer("latents_std", torch.ones(latent_channels), persistent=True)
        self.spatial_compression_ratio = patch_size * 2 ** (len(levels) - 1)
        self.temporal_compression_ratio = patch_size_t

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """Video ``[B, 3, 4k+1, H, W]`` in [-1, 1] -> posterior over ``[B, C, k+1, H/s, W/s]`` (s: spatial compression)."""
        pt = self.config.patch_size_t
        if x.shape[2] % pt != 1 % pt:
            raise ValueError(f"the video needs {pt}k+1 frames, got {x.shape[2]}")
        pad = pt - 1
        x = torch.cat([x[:, :, :1].expand(-1, -1, pad, -1, -1), x], dim=2)
        h = self.encoder(_unshuffle(x, 1 if self.config.full_rate_top else pt, self.config.patch_size))
        posterior = DiagonalGaussianDistribution(h)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        """Latents ``[B, C, k+1, h, w]`` -> video ``[B, 3, 4k+1, s*h, s*w]``."""
        h = self.decoder_low(self.decoder_in(z))
        for stage in self.decoder_mid:
            h = stage(F.interpolate(h, scale_factor=(1, 2, 2), mode="nearest"))
        h = F.interpolate(h, scale_factor=(1, 2, 2), mode="nearest")
        h = self.decoder_up(h)
        pt = self.config.patch_size_t
        if self.config.full_rate_top:  # unfold time, drop the front padding, then the top level at the frame rate
            h = _shuffle(h, self.config.block_out_channels[0], pt, 1)[:, :, pt - 1 :]
            return self._output(_shuffle(self.decoder_high(h), self.config.in_channels, 1, self.config.patch_size), return_dict)
        video = _shuffle(self.decoder_high(h), self.config.in_channels, pt, self.config.patch_size)[:, :, pt - 1 :]
        return self._output(video, return_dict)

    @staticmethod
    def _output(video: torch.Tensor, return_dict: bool):
        return DecoderOutput(sample=video) if return_dict else (video,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x).latent_dist.mode()).sample


def image_gradients(video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical finite differences of ``[B, C, T, H, W]`` frames."""
    return video[..., :, 1:] - video[..., :, :-1], video[..., 1:, :] - video[..., :-1, :]


def reconstruction_loss(
    recon: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None, edge_weight: float = 0.0
) -> torch.Tensor:
    """The VAE's pixel loss: L1 + MSE, averaged with per-pixel ``weight`` (``[B, 1, T, H, W]``,
    default uniform), plus ``edge_weight`` times the L1 distance of the image gradients (the
    gradient-difference loss of Mathieu et al. 2016): an MSE-trained decoder rounds corners off,
    and the gradient term charges for exactly the edges that tell a square from a circle."""
    err = recon - target
    per_pixel = err.abs() + err.pow(2)
    loss = per_pixel.mean() if weight is None else (weight * per_pixel).mean() / weight.mean()
    if edge_weight:
        (rx, ry), (tx, ty) = image_gradients(recon), image_gradients(target)
        loss = loss + edge_weight * ((rx - tx).abs().mean() + (ry - ty).abs().mean())
    return loss


def latent_statistics(vae) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) [1, C, 1, 1, 1] that bring a VAE's latents to unit scale, from
    whichever form the VAE keeps them in: buffers (ours, LTX), config lists (Wan), or a
    scaling factor (the image VAEs)."""
    buffers = dict(vae.named_buffers(recurse=False))
    if "latents_mean" in buffers:
        mean, std = buffers["latents_mean"], buffers["latents_std"]
    elif getattr(vae.config, "latents_mean", None) is not None:
        mean, std = torch.tensor(vae.config.latents_mean), torch.tensor(vae.config.latents_std)
    else:
        channels = vae.config.latent_channels if "latent_channels" in vae.config else vae.config.z_dim
        mean, std = torch.zeros(channels), torch.full((channels,), 1.0 / getattr(vae.config, "scaling_factor", 1.0))
        return mean.view(1, -1, 1, 1, 1).float(), std.view(1, -1, 1, 1, 1).float()
    if "latents_mean" in buffers and "scaling_factor" in vae.config:
        std = std / vae.config.scaling_factor  # LTX: z_normalised = (z - mean) * scaling_factor / std
    return mean.view(1, -1, 1, 1, 1).float(), std.view(1, -1, 1, 1, 1).float()
