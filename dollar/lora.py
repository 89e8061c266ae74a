"""LoRA distillation through peft: one frozen base, three adapters.

The teacher is the base with adapters off, the student is base + adapter ``student``, the fake
score base + adapter ``fake``, and CD's EMA target base + adapter ``ema`` (an EMA of the student
adapter's weights). A 1.3B teacher then costs one copy of its weights plus three small adapters.
Adapters are switched per call (:class:`AdapterView`), so the same transformer object serves all
four roles; export is either a merged diffusers transformer or the student adapter alone, which
``transformer.load_lora_adapter`` (and the stock pipelines' ``load_lora_weights``) read.
"""

from __future__ import annotations

import contextlib
import copy

import torch

ROLES = ("student", "fake", "ema")


def lora_target_modules(transformer: torch.nn.Module) -> list[str]:
    """The linear layers of the transformer blocks (attention projections and feed-forward)."""
    blocks = "blocks." if hasattr(transformer, "blocks") else "transformer_blocks."
    return [name for name, m in transformer.named_modules() if isinstance(m, torch.nn.Linear) and name.startswith(blocks)]


def add_adapters(transformer: torch.nn.Module, rank: int, alpha: float | None = None) -> None:
    """Adapters ``student``, ``fake`` and ``ema`` on a frozen base; each starts at zero (B = 0), so
    every role starts as the teacher."""
    from peft import LoraConfig

    transformer.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=lora_target_modules(transformer), init_lora_weights=True)
    for role in ROLES:
        transformer.add_adapter(copy.deepcopy(config), adapter_name=role)
    for name, p in transformer.named_parameters():
        p.requires_grad_(".student." in name or ".fake." in name)


def adapter_parameters(transformer: torch.nn.Module, role: str) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in transformer.named_parameters() if f".{role}." in n and "lora_" in n}


def _tuner_layers(transformer: torch.nn.Module):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in transformer.modules() if isinstance(m, BaseTunerLayer)]


@contextlib.contextmanager
def active_adapter(transformer: torch.nn.Module, role: str | None):
    """Run with adapter ``role`` (None: the base alone, i.e. the teacher). Unlike peft's
    ``set_adapter`` this leaves ``requires_grad`` alone, so switching roles between a forward and
    its backward cannot freeze the weights the backward is updating."""
    layers = _tuner_layers(transformer)
    saved = [(m._active_adapter, m._disable_adapters) for m in layers]
    for m in layers:
        m._disable_adapters = role is None
        if role is not None:
            m._active_adapter = [role]
    try:
        yield
    finally:
        for m, (active, disabled) in zip(layers, saved):
            m._active_adapter, m._disable_adapters = active, disabled


class AdapterView(torch.nn.Module):
    """The shared transformer seen as one role; ``config`` and ``dtype`` are the base's."""

    def __init__(self, base: torch.nn.Module, role: str | None):
        super().__init__()
        self.base, self.role = base, role

    @property
    def config(self):
        return self.base.config

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    def forward(self, *args, **kwargs):
        with active_adapter(self.base, self.role):
            return self.base(*args, **kwargs)

    def parameters(self, recurse: bool = True):
        """The role's trainable weights (all of the base's for the teacher view)."""
        if self.role is None:
            return self.base.parameters(recurse)
        return iter(adapter_parameters(self.base, self.role).values())


@torch.no_grad()
def update_ema_adapter(transformer: torch.nn.Module, decay: float) -> None:
    """adapter ema <- decay * ema + (1 - decay) * student."""
    student = adapter_parameters(transformer, "student")
    for name, p in adapter_parameters(transformer, "ema").items():
        p.lerp_(student[name.replace(".ema.", ".student.")].detach(), 1.0 - decay)


class AdapterState:
    """The adapters' weights for ``accelerator.register_for_checkpointing`` (the base is frozen)."""

    def __init__(self, transformer: torch.nn.Module):
        self.transformer = transformer

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.transformer.named_parameters() if "lora_" in n}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = dict(self.transformer.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                own[name].copy_(value)


def merged_student(transformer: torch.nn.Module) -> torch.nn.Module:
    """A plain copy of the transformer with the student adapter merged into its weights."""
    merged = copy.deepcopy(transformer)
    merged.delete_adapters(["fake", "ema"])
    merged.fuse_lora(adapter_names=["student"])
    merged.unload_lora()
    return merged.requires_grad_(False)


def save_student_adapter(transformer: torch.nn.Module, folder: str) -> None:
    """The student adapter alone (``pytorch_lora_weights.safetensors``), loadable with
    ``transformer.load_lora_adapter(folder)`` on the teacher's transformer."""
    transformer.save_lora_adapter(folder, adapter_name="student")
