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


def require_postgres() -> None:
    """PostgreSQL's server programs and psycopg, or skip (fail under CI: see needs_system)."""
    from dollar.local_servers import find_postgres_bindir

    try:
        import psycopg  # noqa: F401
    except ImportError:
        needs_system("psycopg", "pip install -r requirements.txt")
    if find_postgres_bindir() is None:
        needs_system("PostgreSQL", "apt-get install postgresql")


def require_chromium() -> str:
    """The path of Debian's Chromium, with Playwright to drive it, or skip (fail under CI: see needs_system)."""
    from dollar.browser_walk import find_chromium

    chromium = find_chromium()
    if chromium is None:
        needs_system("Chromium", "apt-get install chromium")
    try:
        import playwright  # noqa: F401
    except ImportError:
        needs_system("Playwright", "pip install -r requirements.txt")
    return chromium
