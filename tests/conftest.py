import importlib.util
import os

import pytest
import torch

from dollar.models import ltx_video_vae_config

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED_TEACHER = os.path.join(ROOT, "assets", "teacher")

TEST_VAE_CONFIG = dict(latent_channels=4, block_out_channels=(16, 16), layers_per_block=1)
# A stock diffusers video VAE at a tiny size: the pipeline must take it in place of ours.
STOCK_LTX_VAE_CONFIG = ltx_video_vae_config(latent_channels=4, block_out_channels=(8, 16, 16))
TEST_TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=8,
    in_channels=4,
    out_channels=4,
    text_dim=384,
    freq_dim=16,
    ffn_dim=32,
    num_layers=1,
    rope_max_seq_len=32,
)


@pytest.fixture(scope="session")
def text_encoder():
    from dollar.text import load_text_encoder

    return load_text_encoder()


@pytest.fixture()
def tiny_pipeline(text_encoder):
    from diffusers import DDIMScheduler, WanTransformer3DModel

    from dollar import DollarPipeline
    from dollar.models import CausalVideoAutoencoder
    from dollar.schedule import DDIM_SCHEDULER_CONFIG

    torch.manual_seed(0)
    tokenizer, encoder = text_encoder
    pipe = DollarPipeline(
        transformer=WanTransformer3DModel(**TEST_TRANSFORMER_CONFIG).eval(),
        vae=CausalVideoAutoencoder(**TEST_VAE_CONFIG).eval(),
        scheduler=DDIMScheduler(**DDIM_SCHEDULER_CONFIG),
        text_encoder=encoder,
        tokenizer=tokenizer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


requires_bundled_teacher = pytest.mark.skipif(
    not os.path.exists(os.path.join(BUNDLED_TEACHER, "model_index.json")), reason="assets/teacher is not built"
)


def needs_system(what: str, how: str) -> None:
    """A test that needs a system service or program (Chromium, a PostgreSQL server) that is
    missing: skip it on a developer's machine, but fail under CI, where `.ci/run` installs them
    and sets DOLLAR_SYSTEM_TESTS=1, so that a broken install can't pass as a skip."""
    message = f"{what} is not installed ({how})"
    if os.environ.get("DOLLAR_SYSTEM_TESTS") == "1":
        pytest.fail(message + "; .ci/run should have installed it", pytrace=False)
    pytest.skip(message)


def load_benchmark(name: str):
    """A script of benchmarks/ as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
