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
from dollar.video import read_video


def video_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float ``[3, T, H, W]`` in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1.0


def tensor_to_video(x: torch.Tensor) -> np.ndarray:
    """float ``[..., 3, T, H, W]`` in [-1, 1] -> uint8 ``[..., T, H, W, 3]``."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-4, -1).cpu().numpy()


class WorldVideoDataset(Dataset):
    """``length`` clips of the procedural world; item ``i`` is the clip of seed ``seed + i``."""

    def __init__(self, length: int, seed: int = 0, split: str = "train", two_object_fraction: float = 0.0):
        self.length, self.seed, self.split, self.two_object_fraction = length, seed, split, two_object_fraction

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        seed = self.seed + i
        level = 2 if np.random.default_rng([seed, 99]).random() < self.two_object_fraction else 1
        frames, text, _ = world.make_sample(seed, level=level, split=self.split)
        return {"video": video_to_tensor(frames), "caption": text}


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

    def __getitem__(self, i: int) -> dict:
        path, text = self.items[i]
        frames = read_video(path, self.num_frames, self.height, self.width)
        return {"video": video_to_tensor(frames), "caption": text}
