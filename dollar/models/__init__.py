"""Network configurations for the embedded default.

Every network is a stock diffusers class at a small size, so a full-size checkpoint of the
same family (LTX-Video's VAE, a Wan 2.x transformer) loads through the same code.
"""

# AutoencoderKLLTXVideo: patchify 2x2, then two spatio-temporal stride-2 stages:
# 8x spatial, 4x temporal (causal first frame), 12 channels -> 17x64x64x3 / 5x8x8x12 = 54x.
TINY_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=12,
    block_out_channels=(32, 64, 128),
    decoder_block_out_channels=(32, 64, 128),
    down_block_types=("LTXVideoDownBlock3D",) * 3,
    layers_per_block=(1, 1, 1, 1),
    decoder_layers_per_block=(1, 1, 1, 1),
    spatio_temporal_scaling=(True, True, False),
    decoder_spatio_temporal_scaling=(True, True, False),
    decoder_inject_noise=(False, False, False, False),
    downsample_type=("conv", "conv", "conv"),
    upsample_residual=(False, False, False),
    upsample_factor=(1, 1, 1),
    patch_size=2,
    patch_size_t=1,
    encoder_causal=True,
    decoder_causal=False,
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
