"""The memory plan: what a distillation run will hold per GPU, from the teacher's configs alone.

Parameters are counted on the meta device (no weights are read or downloaded), activations from
a per-token cost measured on a tiny instance of the same transformer class (the bytes autograd
saves for backward, per video token, per block and per unit of width) and scaled to the real
width, depth and token count. Every category is laid out as the trainer (``train/distill.py``)
holds it:

- full: a frozen teacher and the CD target (EMA) in the weight dtype; the student and the fake
  score trainable in fp32 (accelerate keeps fp32 master weights under bf16 autocast), each with
  fp32 gradients and two AdamW moments (8-bit AdamW: 2 bytes);
- lora: one frozen base in the weight dtype shared by the teacher (adapters off), the student
  (adapter S) and the fake score (adapter F); only the adapters train, and the EMA covers adapter S;
- ddp keeps everything on every GPU; fsdp shards the four transformers and their optimiser state
  over the GPUs (activations are per GPU either way);
- the trainer encodes clips and prompts before it builds the networks and then drops the text
  encoder (``--prepare_only`` does just that step), so training holds the fp32 VAE but no text
  encoder; the encoded clips stay in host RAM.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import torch

GiB = 2**30
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
MODES, PRECISIONS, STRATEGIES = ("full", "lora"), ("fp32", "bf16"), ("ddp", "fsdp")
OPTIMIZER_TRANSIENT = 4  # bytes/param: AdamW's foreach step holds one extra buffer of its parameters' size
GENERATOR_FORWARDS = 2  # the generator step keeps the VSD and the CD forward of the student alive until its backward


@dataclass(frozen=True)
class Setting:
    mode: str = "full"  # full | lora
    precision: str = "fp32"  # weight dtype of the frozen copies: fp32 | bf16
    strategy: str = "ddp"  # ddp | fsdp
    num_gpus: int = 1
    optimizer_8bit: bool = False
    gradient_checkpointing: bool = False

    def label(self) -> str:
        extra = " + 8-bit AdamW" if self.optimizer_8bit else ""
        extra += " + grad. checkpointing" if self.gradient_checkpointing else ""
        return f"{self.mode} / {self.precision} / {self.strategy} x {self.num_gpus}{extra}"


@dataclass(frozen=True)
class TeacherCounts:
    """What the plan needs to know about a teacher, read from its configs."""

    transformer_class: str
    parameters: int  # transformer
    lora_parameters: int  # one adapter of the trainer's rank on the attention and feed-forward projections
    width: int
    layers: int
    text_encoder_parameters: int
    vae_parameters: int


def _load_config(source: str, subfolder: str) -> dict:
    from dollar.pipeline import ModelLoadError, read_model_index, resolve_model

    path = resolve_model(source)
    if os.path.isdir(path):
        file = os.path.join(path, subfolder, "config.json")
        if not os.path.exists(file):
            raise ModelLoadError(f"{path} has no {subfolder}/config.json; give a saved pipeline folder.")
        return json.load(open(file))
    read_model_index(path)  # one sentence when the hub cannot be reached
    from huggingface_hub import hf_hub_download

    return json.load(open(hf_hub_download(path, f"{subfolder}/config.json")))


def _class(name: str, library: str = "diffusers"):
    import importlib

    import diffusers
    import transformers

    import dollar.models

    for module in (dollar.models, diffusers, transformers):
        if hasattr(module, name):
            return getattr(module, name)
    return getattr(importlib.import_module(library), name)


def _meta_instance(config: dict, library: str = "diffusers"):
    cls = _class(config["_class_name"] if "_class_name" in config else config["architectures"][0], library)
    with torch.device("meta"):
        if library == "transformers":
            return cls(cls.config_class.from_dict(config))
        return cls.from_config(config)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def lora_parameters(transformer: torch.nn.Module, rank: int) -> int:
    """Parameters of one LoRA adapter of ``rank`` on the blocks' linear layers (what the trainer targets)."""
    from dollar.lora import lora_target_modules

    names = set(lora_target_modules(transformer))
    return sum(rank * (m.in_features + m.out_features) for n, m in transformer.named_modules() if n in names)


def teacher_counts(teacher: str, lora_rank: int = 64) -> TeacherCounts:
    """Parameter counts of a teacher folder or hub id, on the meta device (configs only)."""
    config = _load_config(teacher, "transformer")
    transformer = _meta_instance(config)
    width = getattr(transformer.config, "num_attention_heads", 1) * getattr(transformer.config, "attention_head_dim", 1)
    layers = len(getattr(transformer, "blocks", None) or getattr(transformer, "transformer_blocks", None) or [])
    vae = _meta_instance(_load_config(teacher, "vae"))
    try:
        text = _meta_instance(_load_config(teacher, "text_encoder"), "transformers")
        text_parameters = _count(text)
    except Exception:  # noqa: BLE001  (the bundled teachers ship no text encoder folder: the packaged MiniLM)
        text_parameters = 22_713_216  # all-MiniLM-L6-v2
    return TeacherCounts(
        transformer_class=config["_class_name"],
        parameters=_count(transformer),
        lora_parameters=lora_parameters(transformer, lora_rank),
        width=width,
        layers=layers,
        text_encoder_parameters=text_parameters,
        vae_parameters=_count(vae),
    )


def activation_costs(transformer_class: str, tiny_config: dict, lora: bool = False) -> tuple[float, float]:
    """(per video token, per text token) bytes autograd saves for backward in one training forward,
    per block and per unit of width (fp32), fitted on a tiny instance at two text lengths (with
    LoRA adapters on a frozen base when ``lora``: the adapters keep their inputs for backward)."""
    small = activation_bytes(transformer_class, tiny_config, (2, 2, 2), 8, lora)
    large = activation_bytes(transformer_class, tiny_config, (2, 2, 2), 40, lora)
    per_text = max(0.0, (large - small) / 32)
    return (small - 8 * per_text) / 8, per_text


def activation_bytes(
    transformer_class: str, tiny_config: dict, tokens_shape: tuple[int, int, int], text_tokens: int, lora: bool = False
) -> float:
    """Bytes autograd saves for backward in one training forward of a tiny instance of
    ``transformer_class``, per block and per unit of width (fp32)."""
    from dollar.teachers import FAMILIES

    family = next(
        f for f in FAMILIES.values() if transformer_class in f.transformer_classes or transformer_class == "WanTransformer3DModel"
    )
    model = _class(transformer_class).from_config(tiny_config).train()
    if lora:
        from dollar.lora import AdapterView, add_adapters

        add_adapters(model, rank=4)
        model = AdapterView(model, "student")
    c = model.config
    f, h, w = tokens_shape
    patch = c.patch_size if isinstance(c.patch_size, (list, tuple)) else (getattr(c, "patch_size_t", 1) or 1, c.patch_size, c.patch_size)
    x = torch.randn(1, c.in_channels, f * patch[0], h * patch[1], w * patch[2])
    text_dim = next(getattr(c, k) for k in ("text_dim", "text_embed_dim", "caption_channels") if hasattr(c, k))
    text = torch.randn(1, text_tokens, text_dim)
    seen, total = set(), 0

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen and not isinstance(t, torch.nn.Parameter):
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    params = {p.untyped_storage().data_ptr() for p in (model.base if lora else model).parameters()}
    seen |= {(ptr, 0) for ptr in params}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = family.call_transformer(model, x, torch.full((1,), 500.0), text, (4, 8))
    out.float().sum().backward()
    total -= sum(
        p.untyped_storage().nbytes() for p in model.parameters() if (p.untyped_storage().data_ptr(), p.untyped_storage().nbytes()) in seen
    )
    width = c.num_attention_heads * c.attention_head_dim
    core = model.base if lora else model
    layers = len(getattr(core, "blocks", None) or core.transformer_blocks)
    return total / (layers * width)


def decode_cost(vae_config: dict, family_name: str) -> tuple[float, float]:
    """(bytes per output pixel, bytes per output pixel-frame) of one VAE decode (no grad), fitted
    on the VAE's own class and channel widths at three small latents: a decoder that works frame
    by frame with caches (Wan) grows with the pixels of a frame, one that decodes the clip at once
    with every pixel-frame."""
    from dollar.teachers import get_family

    family = get_family(family_name)
    vae = _class(vae_config["_class_name"]).from_config({k: v for k, v in vae_config.items() if not k.startswith("_")}).eval()
    channels = vae_config.get("latent_channels") or vae_config.get("z_dim")

    def peak(frames: int, side: int) -> tuple[int, int, int]:
        with torch.no_grad():
            video, used = measured_peak(family.decode, vae, torch.randn(1, channels, frames, side, side))
        return used, video.shape[2], video.shape[3] * video.shape[4]

    (m1, f1, p1), (m2, _, p2), (m3, f3, _) = peak(2, 4), peak(2, 8), peak(3, 8)
    per_pixel_frame = max(0.0, (m3 - m2) / ((f3 - f1) * p2))
    per_pixel = max(0.0, (m2 - m1) / (p2 - p1) - per_pixel_frame * f1)
    return per_pixel, per_pixel_frame


def plan_bytes(
    counts: TeacherCounts,
    setting: Setting,
    batch_size: int,
    video_tokens: int,
    activation_per_token: tuple[float, float],
    data_bytes: int = 0,
    prepared_data: bool = True,
    decode_bytes: float = 0.0,
    text_tokens: int = 0,
) -> dict[str, float]:
    """Bytes per GPU by category for one setting (see the module doc for the layout). The decoder's
    peak (reward fit, validation) and the training activations are not live at the same time."""
    w = DTYPE_BYTES[setting.precision]
    opt = 2 if setting.optimizer_8bit else 8
    shard = setting.num_gpus if setting.strategy == "fsdp" else 1
    p = counts.parameters
    if setting.mode == "full":
        frozen = 2 * p * w  # teacher + EMA
        trainable = 2 * p * 4  # student + fake, fp32 masters
        gradients = 2 * p * 4
        optimizer = 2 * p * opt + p * OPTIMIZER_TRANSIENT  # one optimiser steps at a time
    else:
        a = counts.lora_parameters
        frozen = p * w + a * 4  # one shared base; the EMA of adapter S
        trainable = 2 * a * 4
        gradients = 2 * a * 4
        optimizer = 2 * a * opt + a * OPTIMIZER_TRANSIENT
    act_dtype = 2 if setting.precision == "bf16" else 4
    per_video, per_text = activation_per_token
    per_layer = (per_video * video_tokens + per_text * text_tokens) * counts.width * act_dtype / 4
    if setting.gradient_checkpointing:  # block inputs kept, one block's activations live at a time
        activations = batch_size * (video_tokens * counts.width * act_dtype * counts.layers + per_layer)
    else:
        activations = batch_size * per_layer * counts.layers
    activations *= GENERATOR_FORWARDS
    helpers = counts.vae_parameters * 4 + (0 if prepared_data else counts.text_encoder_parameters * w)  # the VAE stays fp32
    return {
        "weights": (frozen + trainable) / shard,
        "gradients": gradients / shard,
        "optimizer": optimizer / shard,
        "activations": activations,
        "vae_and_text_encoder": helpers,
        "data": data_bytes,
        "decode": decode_bytes,
        "total": (frozen + trainable + gradients + optimizer) / shard + max(activations, decode_bytes) + helpers,
    }


def all_settings(num_gpus: int, optimizer_8bit: bool = False, gradient_checkpointing: bool = False) -> list[Setting]:
    strategies = STRATEGIES if num_gpus > 1 else ("ddp",)
    return [Setting(m, p, s, num_gpus, optimizer_8bit, gradient_checkpointing) for m in MODES for p in PRECISIONS for s in strategies]


def first_fit(rows: list[tuple[Setting, dict]], budget_bytes: float) -> tuple[Setting, dict] | None:
    """The least compromise that fits: rows are ordered full before LoRA, fp32 before bf16, DDP
    before FSDP (``all_settings``), and the first one within the budget wins."""
    return next(((s, b) for s, b in rows if b["total"] <= budget_bytes), None)


def human(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{n / 2**20:.0f} MiB"


def format_table(rows: list[tuple[Setting, dict]], budget_bytes: float | None = None) -> str:
    """Markdown table of the plan; the data cache lives in host RAM and is listed apart."""
    keys = ("weights", "gradients", "optimizer", "activations", "decode", "vae_and_text_encoder", "total")
    head = "| setting | weights | gradients | optimizer | activations | VAE decode | VAE | total per GPU |"
    head += " fits |" if budget_bytes else ""
    lines = [head, "|" + "---|" * (len(keys) + 1 + bool(budget_bytes))]
    for s, b in rows:
        cells = [s.label()] + [human(b[k]) for k in keys]
        if budget_bytes:
            cells.append("yes" if b["total"] <= budget_bytes else "no")
        lines.append("| " + " | ".join(cells) + " |")
    if rows:
        lines.append(f"\nPlus {human(rows[0][1]['data'])} of encoded clips in host RAM (moved to the GPU one batch at a time).")
    return "\n".join(lines)


def to_json(counts: TeacherCounts, rows: list[tuple[Setting, dict]]) -> dict:
    return {"counts": asdict(counts), "rows": [{"setting": asdict(s), "bytes": b} for s, b in rows]}


SIZE_KEYS = {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 16}
TEXT_KEYS = ("text_dim", "text_embed_dim", "caption_channels")


def tiny_config(config: dict) -> dict:
    """The teacher's transformer config at width 32 and depth 2, other ratios kept (feed-forward
    width / model width), for measuring the per-token activation cost."""
    width = config.get("num_attention_heads", 1) * config.get("attention_head_dim", 1)
    tiny = {k: v for k, v in config.items() if not k.startswith("_")}
    tiny.update({k: v for k, v in SIZE_KEYS.items() if k in config})
    new_width = SIZE_KEYS["num_attention_heads"] * SIZE_KEYS["attention_head_dim"]
    if "ffn_dim" in config:
        tiny["ffn_dim"] = max(8, round(config["ffn_dim"] * new_width / width))
    if "cross_attention_dim" in config:  # LTX: cross-attention runs at the model width
        tiny["cross_attention_dim"] = new_width
    for k in TEXT_KEYS:
        if k in config:
            tiny[k] = 32
    if "time_embed_dim" in config:
        tiny["time_embed_dim"] = 8
    return tiny


def text_width(config: dict) -> int:
    return next(config[k] for k in TEXT_KEYS if k in config)


@dataclass(frozen=True)
class RunShape:
    """What the run feeds the transformer: batch, video tokens per sample, text tokens, clips held."""

    batch_size: int
    latent_shape: tuple[int, int, int, int]  # C, F, h, w
    video_tokens: int
    text_tokens: int
    num_clips: int
    pixels_per_clip: int  # frames x height x width
    pixel_height: int
    pixel_width: int


def run_shape(teacher: str, batch_size: int, num_frames: int, height: int, width: int, num_clips: int) -> RunShape:
    """Latent shape and token counts of a run, from the teacher's configs (meta device)."""
    from dollar.pipeline import read_model_index, resolve_model
    from dollar.teachers import detect_family

    path = resolve_model(teacher)
    family = detect_family(read_model_index(path), path)
    config = _load_config(teacher, "transformer")
    vae = _meta_instance(_load_config(teacher, "vae"))
    temporal, spatial = family.vae_scale_factors(vae)
    meta_transformer = _meta_instance(config)
    h, w, f = height or family.default_height, width or family.default_width, num_frames or family.default_num_frames
    if family.name == "cogvideox":
        h, w, f = family.default_size(meta_transformer, vae) if not (height and width and num_frames) else (h, w, f)
    latent = (config["in_channels"], (f - 1) // temporal + 1, h // spatial, w // spatial)
    patch = config["patch_size"]
    pt, ph, pw = patch if isinstance(patch, (list, tuple)) else (config.get("patch_size_t") or 1, patch, patch)
    tokens = (latent[1] // pt) * (latent[2] // ph) * (latent[3] // pw)
    return RunShape(batch_size, latent, tokens, family.text_length(meta_transformer), num_clips, f * h * w, h, w)


def plan(
    teacher: str,
    shape: RunShape,
    num_gpus: int = 1,
    lora_rank: int = 64,
    optimizer_8bit: bool = False,
    gradient_checkpointing: bool = False,
    prepared_data: bool = True,
    decode_batch_size: int = 2,
) -> tuple[TeacherCounts, list[tuple[Setting, dict]]]:
    """Every setting's bytes per GPU for a run of ``teacher`` (configs only; nothing is loaded)."""
    counts = teacher_counts(teacher, lora_rank)
    config = _load_config(teacher, "transformer")
    per_token = {mode: activation_costs(counts.transformer_class, tiny_config(config), lora=mode == "lora") for mode in MODES}
    c, f, h, w = shape.latent_shape
    data_bytes = shape.num_clips * (c * f * h * w + shape.text_tokens * text_width(config)) * 2  # fp16 cache
    decode = 0.0
    if shape.pixels_per_clip:
        from dollar.pipeline import read_model_index, resolve_model
        from dollar.teachers import detect_family

        path = resolve_model(teacher)
        family = detect_family(read_model_index(path), path).name
        per_pixel, per_pixel_frame = decode_cost(_load_config(teacher, "vae"), family)
        frames = shape.pixels_per_clip // (shape.pixel_height * shape.pixel_width)
        decode = (
            (per_pixel + per_pixel_frame * frames) * shape.pixel_height * shape.pixel_width * (decode_batch_size or 2 * shape.batch_size)
        )
    rows = [
        (
            s,
            plan_bytes(
                counts, s, shape.batch_size, shape.video_tokens, per_token[s.mode], data_bytes, prepared_data, decode, shape.text_tokens
            ),
        )
        for s in all_settings(num_gpus, optimizer_8bit, gradient_checkpointing)
    ]
    return counts, rows


class PeakMemory:
    """Peak bytes of live tensors allocated inside the ``with`` block, counted by PyTorch's
    MemTracker (per-module statistics off, so modules may run many times). Tensors that existed
    before the block (loaded weights) are not counted: add them with :func:`tensor_bytes`."""

    def __init__(self):
        from torch.distributed._tools.mem_tracker import MemTracker

        class _Tracker(MemTracker):
            def _pre_fw_hook(self, module, inputs):  # per-module stats refuse a module run twice
                pass

            def _post_fw_hook(self, module, inputs, outputs):
                pass

            def _pre_bw_hook(self, module, args):
                pass

            def _post_bw_hook(self, module, args):
                pass

        self.tracker = _Tracker()
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        self.tracker.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.tracker.__exit__(*exc)
        self.peak = sum(snap["Total"] for snap in self.tracker.get_tracker_snapshot("peak").values())


def measured_peak(fn, *args, **kwargs) -> tuple[object, int]:
    """(fn's result, the peak bytes of the tensors it allocated while it ran)."""
    with PeakMemory() as peak:
        result = fn(*args, **kwargs)
    return result, peak.peak


def tensor_bytes(*modules: torch.nn.Module) -> int:
    """Bytes of the distinct parameters and buffers of ``modules`` (shared weights counted once)."""
    seen, total = set(), 0
    for module in modules:
        for t in [*module.parameters(), *module.buffers()]:
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
    return total
