"""Choose the attention kernel once: xformers' memory-efficient attention on CUDA when it is
installed, PyTorch's scaled-dot-product attention otherwise (diffusers' attention dispatcher)."""

from __future__ import annotations

import importlib.util
import logging

import torch

logger = logging.getLogger(__name__)


def choose_attention_backend(preference: str = "auto") -> str:
    """'auto' -> 'xformers' on CUDA with xformers installed, else 'native' (SDPA)."""
    if preference != "auto":
        return preference
    if torch.cuda.is_available() and importlib.util.find_spec("xformers") is not None:
        return "xformers"
    return "native"


def set_attention_backend(model: torch.nn.Module, preference: str = "auto") -> str:
    """Set and log the backend of a diffusers model; returns its name."""
    backend = choose_attention_backend(preference)
    if hasattr(model, "set_attention_backend"):
        model.set_attention_backend(backend)
    logger.warning("attention backend: %s", backend)
    return backend
