"""Network configurations for the embedded default.

The teacher is a stock diffusers class at a small size (WanTransformer3DModel), so a full-size
checkpoint of the same family loads through the same code; the VAE is a diffusers ModelMixin
with the interface of diffusers' video VAEs, so a stock one can replace it.
"""

# The video VAE (see video_vae.py for why it is not a stock class): 4x4x4 pixel-unshuffle,
# one stride-2 spatial stage -> 8x spatial, 4x temporal, 12 channels:
# 17x64x64x3 / 5x8x8x12 = 54x compression.
TINY_VAE_CONFIG = dict(latent_channels=12, patch_size=4, patch_size_t=4, block_out_channels=(96, 128), layers_per_block=2)


def ltx_video_vae_config(latent_channels: int = 12, block_out_channels: tuple[int, int, int] = (32, 64, 128)) -> dict:
    """Kwargs for a stock diffusers AutoencoderKLLTXVideo at this project's compression: 2x2 patches
    and two spatio-temporal stride-2 stages (8x spatial, 4x temporal, causal first frame)."""
    return dict(
        latent_channels=latent_channels,
        block_out_channels=block_out_channels,
        decoder_block_out_channels=block_out_channels,
        down_block_types=("LTXVideoDownBlock3D",) * 3,
        layers_per_block=(1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False),
        decoder_spatio_temporal_scaling=(True, True, False),
        decoder_inject_noise=(False,) * 4,
        downsample_type=("conv",) * 3,
        upsample_residual=(False,) * 3,
        upsample_factor=(1, 1, 1),
        patch_size=2,
    )


# WanTransformer3DModel: 2x2 spatial patches over the 5x8x8x12 latent -> 80 tokens,
# width 128, 6 blocks, text states from MiniLM (384-d). ~2M parameters: sized so that it
# trains on two CPU cores in under an hour and samples 50 CFG steps in about a second.
TINY_TEACHER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=4,
    attention_head_dim=32,
    in_channels=12,
    out_channels=12,
    text_dim=384,
    freq_dim=128,
    ffn_dim=512,
    num_layers=6,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=64,
)

from dollar.models.attention import choose_attention_backend, set_attention_backend  # noqa: E402
from dollar.models.latent_reward import LatentRewardModel  # noqa: E402
from dollar.models.tiny_decoder import TinyVideoDecoder  # noqa: E402
from dollar.models.transformer import DollarWanTransformer3DModel  # noqa: E402
from dollar.models.video_vae import CausalVideoAutoencoder  # noqa: E402

__all__ = [
    "DollarWanTransformer3DModel",
    "ltx_video_vae_config",
    "CausalVideoAutoencoder",
    "LatentRewardModel",
    "TinyVideoDecoder",
    "choose_attention_backend",
    "set_attention_backend",
    "TINY_TEACHER_CONFIG",
    "TINY_VAE_CONFIG",
]
