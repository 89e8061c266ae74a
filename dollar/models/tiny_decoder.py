"""A tiny video decoder distilled from a VAE's decoder (TAEHV-style), for fast previews and apps.

Frames are decoded with 2-D convolutions, one frame at a time in parallel; time enters through
memory blocks (each sees its input and the previous frame's, so it is causal) and through
temporal upsampling (``TGrow``: a 1x1 convolution makes ``k`` frames' channels from one frame).
Each level doubles the resolution; a final pixel shuffle gives the rest. As in TAEHV, ``k+1``
latent frames give ``t (k+1)`` frames of which the first ``t - 1`` are dropped: the 4k+1
convention of the causal video VAEs (ours, Wan, LTX), where the first latent frame is the first
video frame alone.

It reads *normalised* latents (the transformer's unit-scale space, ``(z - mean) / std`` of
:func:`~dollar.models.video_vae.latent_statistics`), which is what a pipeline holds after
denoising, and returns video in about [-1, 1] like ``vae.decode``. Its size (latent channels,
temporal and spatial compression) is read from the VAE it is distilled from
(:meth:`TinyVideoDecoder.for_vae`), and it records that VAE's fingerprint so a pipeline can
refuse a tiny decoder distilled from another VAE. Training: ``train/train_tiny_decoder.py``.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin

# VAE class -> the teacher family that knows how to call its decoder and read its compression
VAE_FAMILIES = {"AutoencoderKLWan": "wan", "AutoencoderKLLTXVideo": "ltx", "AutoencoderKLCogVideoX": "cogvideox"}


def vae_family(vae):
    """The :class:`~dollar.teachers.TeacherFamily` that decodes ``vae`` (ours and unknown classes: 'dollar')."""
    from dollar.teachers import get_family

    return get_family(VAE_FAMILIES.get(type(vae).__name__, "dollar"))


def vae_geometry(vae) -> tuple[int, int, int]:
    """(latent channels, temporal compression, spatial compression) of a video VAE, from its config."""
    temporal, spatial = vae_family(vae).vae_scale_factors(vae)
    if type(vae).__name__ == "AutoencoderKLWan":  # Wan keeps its temporal factor in the config alone
        temporal = int(vae.config.get("scale_factor_temporal", temporal))
    channels = vae.config.get("latent_channels") or vae.config.get("z_dim")
    return int(channels), temporal, spatial


@torch.no_grad()
def vae_fingerprint(vae) -> str:
    """A short hash of the VAE's weights and latent statistics (rounded to fp16, so the same
    checkpoint loaded in fp32 or fp16 gives the same hash): which VAE a tiny decoder copies."""
    from dollar.models.video_vae import latent_statistics

    digest = hashlib.sha256(type(vae).__name__.encode())
    mean, std = latent_statistics(vae)
    items = [("latents_mean", mean), ("latents_std", std), *sorted(vae.state_dict().items())]
    for name, tensor in items:
        digest.update(name.encode() + str(tuple(tensor.shape)).encode())
        if tensor.is_floating_point():
            digest.update(tensor.detach().to("cpu", torch.float16).numpy().tobytes())
        else:
            digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _conv(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


def _previous_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """[B*T, C, H, W] -> each frame's predecessor in its clip (zeros before the first)."""
    bt, c, h, w = x.shape
    x = x.view(bt // frames, frames, c, h, w)
    return F.pad(x, (0, 0, 0, 0, 0, 0, 1, 0))[:, :frames].reshape(bt, c, h, w)


class MemBlock(nn.Module):
    """Residual block over a frame and its predecessor: the decoder's only view across time
    besides upsampling, and a causal one."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            _conv(2 * channels, channels),
            nn.ReLU(inplace=True),
            _conv(channels, channels),
            nn.ReLU(inplace=True),
            _conv(channels, channels),
        )

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        return F.relu(self.conv(torch.cat([x, _previous_frames(x, frames)], 1)) + x)


class TGrow(nn.Module):
    """Temporal upsampling by ``stride``: each frame's 1x1-projected channels split into ``stride`` frames."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bt, c, h, w = x.shape
        return self.conv(x).view(bt * self.stride, c, h, w)


def default_temporal_upscale(temporal: int, levels: int) -> tuple[int, ...]:
    """Per-level temporal factors whose product is ``temporal``: factors of 2 on the last levels
    (TAEHV's order: the coarse levels run on fewer frames), the rest at the last level."""
    ups = [1] * levels
    remaining = temporal
    for i in reversed(range(levels)):
        if remaining % 2 == 0 and remaining > 1:
            ups[i], remaining = 2, remaining // 2
    ups[-1] *= remaining
    return tuple(ups)


class TinyVideoDecoder(ModelMixin, ConfigMixin):
    """Normalised latents ``[B, C, k+1, h, w]`` -> video ``[B, 3, t k + 1, s h, s w]`` (``t``, ``s``:
    the VAE's temporal and spatial compression).

    ``block_out_channels``: channels per level; level ``i`` works at ``2**i`` times the latent
    resolution, and a final pixel shuffle of ``patch_size = spatial_compression / 2**(levels - 1)``
    reaches the video's. ``temporal_upscale``: the frame factor applied when leaving each level
    (default: 2x on the last levels, product ``temporal_compression``). ``vae_fingerprint`` /
    ``vae_class``: the VAE it was distilled from (see :func:`vae_fingerprint`).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 12,
        out_channels: int = 3,
        temporal_compression: int = 4,
        spatial_compression: int = 8,
        block_out_channels: tuple[int, ...] = (64, 32),
        blocks_per_level: int | tuple[int, ...] = 1,
        temporal_upscale: tuple[int, ...] | None = None,
        vae_fingerprint: str | None = None,
        vae_class: str | None = None,
    ):
        super().__init__()
        levels = len(block_out_channels)
        patch = spatial_compression / 2 ** (levels - 1)
        if patch < 1 or patch != int(patch):
            raise ValueError(
                f"{levels} levels do not fit a spatial compression of {spatial_compression}: it must be 2**(levels - 1) times a whole number; "
                "use fewer block_out_channels."
            )
        ups = tuple(temporal_upscale) if temporal_upscale else default_temporal_upscale(temporal_compression, levels)
        if len(ups) != levels or math.prod(ups) != temporal_compression:
            raise ValueError(f"temporal_upscale {ups} must have {levels} factors whose product is {temporal_compression}.")
        self.patch_size = int(patch)
        self.temporal_upscale = ups
        ch = list(block_out_channels)
        blocks = [blocks_per_level] * levels if isinstance(blocks_per_level, int) else list(blocks_per_level)
        if len(blocks) != levels:
            raise ValueError(f"blocks_per_level {blocks_per_level} must be one number or one per level ({levels}).")
        self.conv_in = _conv(latent_channels, ch[0])
        self.levels = nn.ModuleList()
        for i in range(levels):
            level = nn.ModuleDict({"blocks": nn.ModuleList(MemBlock(ch[i]) for _ in range(blocks[i]))})
            if ups[i] > 1:
                level["grow"] = TGrow(ch[i], ups[i])
            if i + 1 < levels:
                level["proj"] = _conv(ch[i], ch[i + 1], bias=False)
            self.levels.append(level)
        self.conv_out = _conv(ch[-1], out_channels * self.patch_size**2)

    @classmethod
    def for_vae(cls, vae, **kwargs) -> TinyVideoDecoder:
        """A tiny decoder sized for ``vae`` (its latent channels and compression read from its
        config), with ``vae``'s fingerprint recorded; ``kwargs`` override the architecture."""
        channels, temporal, spatial = vae_geometry(vae)
        kwargs.setdefault("block_out_channels", cls.default_channels(spatial))
        levels = len(kwargs["block_out_channels"])
        kwargs.setdefault("temporal_upscale", default_temporal_upscale(temporal, levels))
        if spatial % 2 ** (levels - 1):
            raise ValueError(
                f"The VAE's spatial compression {spatial} is not a multiple of 2**{levels - 1}; pass fewer block_out_channels."
            )
        return cls(
            latent_channels=channels,
            temporal_compression=temporal,
            spatial_compression=spatial,
            vae_fingerprint=vae_fingerprint(vae),
            vae_class=type(vae).__name__,
            **kwargs,
        )

    @staticmethod
    def default_channels(spatial_compression: int) -> tuple[int, ...]:
        """Two levels (latent resolution, then 2x) when the compression is even: on a CPU this
        decodes the bundled VAE's latents ~9x faster than its decoder and fit it better after the
        same training than three levels of (64, 32, 16), which were slower (see the model card)."""
        return (64, 32) if spatial_compression % 2 == 0 else (64,)

    def forward(self, latents: torch.Tensor, return_dict: bool = True):
        b, _, t, _, _ = latents.shape
        x = latents.transpose(1, 2).reshape(b * t, *latents.shape[1:2], *latents.shape[3:])
        x = F.relu(self.conv_in(torch.tanh(x / 3) * 3))  # soft clamp: a stray latent cannot blow up the frame
        frames = t
        for i, level in enumerate(self.levels):
            for block in level["blocks"]:
                x = block(x, frames)
            if i + 1 < len(self.levels):
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            if "grow" in level:
                x = level["grow"](x)
                frames *= self.temporal_upscale[i]
            if "proj" in level:
                x = level["proj"](x)
        x = F.pixel_shuffle(self.conv_out(F.relu(x)), self.patch_size)
        video = x.view(b, frames, *x.shape[1:]).transpose(1, 2)[:, :, self.config.temporal_compression - 1 :]
        return DecoderOutput(sample=video) if return_dict else (video,)

    def decode(self, latents: torch.Tensor, return_dict: bool = True):
        """Alias of ``forward`` in a VAE's words."""
        return self.forward(latents, return_dict=return_dict)
