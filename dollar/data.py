"""Datasets: the procedural world, and a folder or CSV of real clips (WebVid style).

Both yield ``{"video": float tensor [3, T, H, W] in [-1, 1], "caption": str}``.
"""

from __future__ import annotations

import csv
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from dollar import world
from dollar.video import fit_clip, read_video


def video_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float ``[3, T, H, W]`` in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1.0


def tensor_to_video(x: torch.Tensor) -> np.ndarray:
    """float ``[..., 3, T, H, W]`` in [-1, 1] -> uint8 ``[..., T, H, W, 3]``."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-4, -1).cpu().numpy()


def foreground_mask(video: torch.Tensor, threshold: float = 0.15) -> torch.Tensor:
    """``[B, 1, T, H, W]``: 1 where a pixel of ``[B, 3, T, H, W]`` differs from its row's background
    (the median over time and columns) by more than ``threshold``."""
    b, c, t, h, w = video.shape
    rows = video.permute(0, 1, 3, 2, 4).reshape(b, c, h, t * w).median(-1).values  # [B, 3, H]
    dist = (video - rows[:, :, None, :, None]).abs().amax(1, keepdim=True)
    return (dist > threshold).float()


def object_crops(video: torch.Tensor, size: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    """Random ``size`` x ``size`` windows of ``frames`` consecutive frames from ``[B, 3, T, H, W]``
    clips, each centred (with jitter of up to a quarter window) on a foreground pixel of its first
    frame, or anywhere when the clip has none: a fully convolutional VAE learns the same maps from
    them at a fraction of the cost, and the windows hold the objects, not the flat background."""
    b, _, t, h, w = video.shape
    if not (0 < size <= min(h, w) and 0 < frames <= t):
        raise ValueError(f"a {frames}-frame {size}x{size} window does not fit clips of {t} frames of {h}x{w}")
    mask = foreground_mask(video)
    out = []
    for i in range(b):
        t0 = int(torch.randint(0, t - frames + 1, (1,), generator=generator))
        ys, xs = torch.nonzero(mask[i, 0, t0], as_tuple=True)
        if len(ys):
            k = int(torch.randint(0, len(ys), (1,), generator=generator))
            jy, jx = (torch.randint(-(size // 4), size // 4 + 1, (2,), generator=generator)).tolist()
            y0, x0 = int(ys[k]) - size // 2 + jy, int(xs[k]) - size // 2 + jx
        else:
            y0, x0 = (torch.randint(0, max(h, w), (2,), generator=generator)).tolist()
        y0, x0 = min(max(y0, 0), h - size), min(max(x0, 0), w - size)
        out.append(video[i, :, t0 : t0 + frames, y0 : y0 + size, x0 : x0 + size])
    return torch.stack(out)


class WorldVideoDataset(Dataset):
    """``length`` clips of the procedural world; item ``i`` is the clip of seed ``seed + i``."""

    def __init__(
        self,
        length: int,
        seed: int = 0,
        split: str = "train",
        two_object_fraction: float = 0.0,
        vocabulary: str = "world",
        num_frames: int = world.NUM_FRAMES,
        height: int = world.HEIGHT,
        width: int = world.WIDTH,
    ):
        self.length, self.seed, self.split, self.two_object_fraction = length, seed, split, two_object_fraction
        self.vocabulary = vocabulary  # "world": the world's own phrasings; "rich": also training synonyms
        self.size = (num_frames, height, width)  # a teacher's own size; the world renders at 17x64x64

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        frames, text, _ = world.make_sample(self.seed + i, level=self._level(i), split=self.split, vocabulary=self.vocabulary)
        return {"video": video_to_tensor(fit_clip(frames, *self.size)), "caption": text}

    def _level(self, i: int) -> int:
        return 2 if np.random.default_rng([self.seed + i, 99]).random() < self.two_object_fraction else 1

    def captions(self, i: int, k: int) -> list[str]:
        """``k`` captions of clip ``i``: its own, then other phrasings of the same scene."""
        _, text, scene = world.make_sample(self.seed + i, level=self._level(i), split=self.split, vocabulary=self.vocabulary)
        rngs = [np.random.default_rng([self.seed + i, j, 7]) for j in range(1, k)]
        return [text] + [world.caption(scene, rng, self.vocabulary) for rng in rngs]


class VideoFolderDataset(Dataset):
    """Real clips listed in a CSV with columns ``video_path,caption`` (paths relative to the CSV),
    or a folder of videos each with a ``.txt`` caption of the same name."""

    VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".avi", ".mkv", ".gif")

    def __init__(self, source: str, num_frames: int = world.NUM_FRAMES, height: int = world.HEIGHT, width: int = world.WIDTH):
        self.num_frames, self.height, self.width = num_frames, height, width
        if os.path.isdir(source):
            names = sorted(n for n in os.listdir(source) if n.lower().endswith(self.VIDEO_EXTENSIONS))
            self.items = []
            for n in names:
                cap = os.path.join(source, os.path.splitext(n)[0] + ".txt")
                if os.path.exists(cap):
                    self.items.append((os.path.join(source, n), open(cap).read().strip()))
        elif os.path.isfile(source):
            root = os.path.dirname(os.path.abspath(source))
            with open(source, newline="") as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames or not {"video_path", "caption"} <= set(reader.fieldnames):
                    raise ValueError(f"{source} must be a CSV with a header 'video_path,caption'.")
                self.items = [(os.path.join(root, r["video_path"]), r["caption"]) for r in reader]
        else:
            raise FileNotFoundError(f"{source} is neither a folder of videos nor a CSV file; give an existing path.")
        if not self.items:
            raise ValueError(f"{source} lists no video with a caption; add 'name.mp4' + 'name.txt' pairs or CSV rows.")

    def __len__(self) -> int:
        return len(self.items)

    def captions(self, i: int, k: int = 1) -> list[str]:
        return [self.items[i][1]] * k

    def __getitem__(self, i: int) -> dict:
        path, text = self.items[i]
        frames = read_video(path, self.num_frames, self.height, self.width)
        return {"video": video_to_tensor(frames), "caption": text}


@torch.no_grad()
def encode_dataset(vae, encode_text, clips, captions_per_clip: int = 1, batch_size: int = 16, progress: bool = True) -> dict:
    """Encode a dataset once for training: ``latents`` [N, C, F, h, w] (normalized, fp16),
    ``text_states`` [N, K, L, D] (K captions per clip, fp16) and ``null_states`` [1, L, D].
    ``encode_text(prompts) -> [B, L, D]`` is the teacher's (e.g. ``DollarPipeline.encode_text``)."""
    from tqdm.auto import tqdm

    from dollar.models.video_vae import latent_statistics

    device = next(vae.parameters()).device
    mean, std = latent_statistics(vae)
    latents, states = [], []
    for start in tqdm(range(0, len(clips), batch_size), desc="encoding clips", disable=not progress):
        idx = range(start, min(start + batch_size, len(clips)))
        video = torch.stack([clips[i]["video"] for i in idx]).to(device, vae.dtype)
        z = vae.encode(video).latent_dist.mode().float().cpu()
        latents.append(((z - mean) / std).half())
        texts = [clips.captions(i, captions_per_clip) for i in idx]  # [n][K]
        flat = encode_text([t for per_clip in texts for t in per_clip]).float().cpu()
        states.append(flat.view(len(idx), captions_per_clip, *flat.shape[1:]).half())
    return {
        "latents": torch.cat(latents),
        "text_states": torch.cat(states),
        "null_states": encode_text([""]).float().cpu().half(),
    }
