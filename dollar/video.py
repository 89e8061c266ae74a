"""Reading and writing clips: imageio (ffmpeg) for files, OpenCV for resizing."""

from __future__ import annotations

import os

import numpy as np

from dollar.world import FPS

VIDEO_SUFFIXES = (".mp4", ".gif", ".npy")


def save_video(frames: np.ndarray, path: str, fps: int = FPS) -> str:
    """Write uint8 ``[T, H, W, 3]`` frames; the format follows the extension (.mp4, .gif, .npy)."""
    import imageio.v3 as iio

    ext = os.path.splitext(path)[1].lower()
    if ext not in VIDEO_SUFFIXES:
        raise ValueError(f"Unsupported output extension '{ext}'; use one of {', '.join(VIDEO_SUFFIXES)}.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"The output folder {folder} does not exist; create it first.")
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if ext == ".npy":
        np.save(path, frames)
    elif ext == ".gif":
        iio.imwrite(path, frames, extension=".gif", duration=1000 / fps, loop=0)
    else:
        iio.imwrite(path, frames, extension=".mp4", plugin="FFMPEG", fps=fps, codec="libx264", macro_block_size=1, quality=8)
    return path


def read_video(path: str, num_frames: int, height: int, width: int) -> np.ndarray:
    """Read a clip, take ``num_frames`` evenly spaced frames, resize to ``height x width``."""
    import cv2
    import imageio.v3 as iio

    if path.endswith(".npy"):
        frames = np.load(path, allow_pickle=False)
    else:
        frames = iio.imread(path, plugin="FFMPEG" if not path.endswith(".gif") else None, index=None)
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None].repeat(3, -1) if frames.shape[-1] not in (3, 4) else frames[None]
    idx = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
    out = [cv2.resize(np.ascontiguousarray(frames[i][..., :3]), (width, height), interpolation=cv2.INTER_AREA) for i in idx]
    return np.stack(out).astype(np.uint8)
