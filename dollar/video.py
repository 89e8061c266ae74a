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


def fit_clip(frames: np.ndarray, num_frames: int, height: int, width: int) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> ``num_frames`` evenly spaced frames, resized to cover
    ``height x width`` with the aspect ratio kept, then centre-cropped (a no-op at that size)."""
    import cv2

    idx = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
    h, w = frames.shape[1:3]
    scale = max(height / h, width / w)
    size = (max(width, round(w * scale)), max(height, round(h * scale)))
    top, left = (size[1] - height) // 2, (size[0] - width) // 2
    out = []
    for i in idx:
        frame = np.ascontiguousarray(frames[i][..., :3])
        if (h, w) != (height, width):
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)[
                top : top + height, left : left + width
            ]
        out.append(frame)
    return np.stack(out).astype(np.uint8)


def read_video(path: str, num_frames: int, height: int, width: int) -> np.ndarray:
    """Read a clip, take ``num_frames`` evenly spaced frames, resize and centre-crop to ``height x width``."""
    import imageio.v3 as iio

    if path.endswith(".npy"):
        frames = np.load(path, allow_pickle=False)
    else:
        frames = iio.imread(path, plugin="FFMPEG" if not path.endswith(".gif") else None, index=None)
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None].repeat(3, -1) if frames.shape[-1] not in (3, 4) else frames[None]
    return fit_clip(frames, num_frames, height, width)
