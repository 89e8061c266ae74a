"""Tiny, randomly initialised stock diffusers text-to-video pipelines, built offline: for tests, the
GPU check (benchmarks/cuda_check.py) and a user who wants to try a family without downloading it.

The configs follow diffusers' own fast tests (tests/pipelines/{wan,cogvideo,ltx}); the text encoder
is a tiny random T5 / UMT5 and the tokenizer the packaged MiniLM WordPiece one (the stock
pipelines only call ``tokenizer(...)``), so nothing is downloaded. Each builder returns a stock
pipeline object; ``save(name, folder)`` writes it with ``save_pretrained``.
"""

from __future__ import annotations

import torch

# Small sizes each family accepts: (height, width, num_frames).
SIZES = {"wan": (16, 16, 9), "wan-unipc": (16, 16, 9), "cogvideox": (16, 16, 9), "ltx": (32, 32, 9)}
TEXT_LENGTH = 16
PIPELINE_CLASSES = {"wan": "WanPipeline", "wan-unipc": "WanPipeline", "cogvideox": "CogVideoXPipeline", "ltx": "LTXPipeline"}
FAMILY = {"wan": "wan", "wan-unipc": "wan", "cogvideox": "cogvideox", "ltx": "ltx"}


def _text(umt5: bool = False):
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    from dollar.text import load_text_encoder

    tokenizer, _ = load_text_encoder()
    kw = dict(vocab_size=tokenizer.vocab_size, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8)
    encoder = UMT5EncoderModel(UMT5Config(**kw)) if umt5 else T5EncoderModel(T5Config(**kw))
    return tokenizer, encoder.eval()


def wan(unipc: bool = False):
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    if unipc:  # as Wan-AI ship their Diffusers folders
        scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000
        )
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    tokenizer, text_encoder = _text(umt5=True)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler)


def cogvideox():
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,  # 3-D rotary embeddings need head_dim * 3/8 even
        in_channels=4,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=32,
        num_layers=1,
        sample_width=2,
        sample_height=2,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=TEXT_LENGTH,
        use_rotary_positional_embeddings=True,  # as CogVideoX-5b
    )
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    # CogVideoX-2b's scheduler_config: v-prediction on a zero-terminal-SNR, SNR-shifted schedule
    scheduler = CogVideoXDDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        set_alpha_to_one=True,
        snr_shift_scale=3.0,
        timestep_spacing="trailing",
    )
    tokenizer, text_encoder = _text()
    return CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler)


def ltx():
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=32,
    )
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    # LTX-Video's scheduler_config: the shift depends on the video's token count
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1
    )
    tokenizer, text_encoder = _text()
    return LTXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler)


BUILDERS = {"wan": wan, "wan-unipc": lambda: wan(unipc=True), "cogvideox": cogvideox, "ltx": ltx}


def save(name: str, folder) -> str:
    pipe = BUILDERS[name]()
    pipe.save_pretrained(str(folder))
    return str(folder)


def stock_latents(name: str, pipe, generator: torch.Generator) -> torch.Tensor:
    """Initial noise in the stock pipeline's own layout for ``latents=``."""
    h, w, f = SIZES[name]
    if name == "cogvideox":
        spatial = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        shape = (1, (f - 1) // 4 + 1, pipe.transformer.config.in_channels, h // spatial, w // spatial)
        return torch.randn(shape, generator=generator)
    if name == "ltx":
        s, t = pipe.vae.spatial_compression_ratio, pipe.vae.temporal_compression_ratio
        z = torch.randn((1, pipe.transformer.config.in_channels, (f - 1) // t + 1, h // s, w // s), generator=generator)
        return pipe._pack_latents(z, pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size)
    s, t = pipe.vae.config.scale_factor_spatial, pipe.vae.config.scale_factor_temporal
    return torch.randn((1, pipe.transformer.config.in_channels, (f - 1) // t + 1, h // s, w // s), generator=generator)
