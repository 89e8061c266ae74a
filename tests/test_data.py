import numpy as np
import pytest
import torch

from dollar import world
from dollar.data import VideoFolderDataset, WorldVideoDataset, tensor_to_video, video_to_tensor
from dollar.video import save_video


def test_tensor_conversions_round_trip():
    frames, _, _ = world.make_sample(0)
    x = video_to_tensor(frames)
    assert x.shape == (3, 17, 64, 64) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(tensor_to_video(x), frames)


def test_world_dataset_is_indexed_by_seed():
    ds = WorldVideoDataset(4, seed=10)
    assert len(ds) == 4 and ds[1]["caption"] == world.make_sample(11)[1]
    assert torch.equal(ds[1]["video"], WorldVideoDataset(4, seed=10)[1]["video"])


@pytest.mark.parametrize("ext", ["mp4", "gif", "npy"])
def test_csv_of_real_clips_loads_resized(tmp_path, ext):
    frames, _, _ = world.make_sample(3)
    big = np.repeat(np.repeat(frames, 2, axis=1), 2, axis=2)  # 128x128 source clip
    save_video(big, str(tmp_path / f"clip.{ext}"))
    (tmp_path / "data.csv").write_text(f"video_path,caption\nclip.{ext},a test clip\n")
    ds = VideoFolderDataset(str(tmp_path / "data.csv"))
    item = ds[0]
    assert item["caption"] == "a test clip" and item["video"].shape == (3, 17, 64, 64)
    assert (tensor_to_video(item["video"]).astype(int) - frames).__abs__().mean() < 6


def test_folder_of_clips_with_txt_captions(tmp_path):
    frames, _, _ = world.make_sample(4)
    save_video(frames, str(tmp_path / "a.gif"))
    (tmp_path / "a.txt").write_text("a caption\n")
    save_video(frames, str(tmp_path / "b.gif"))  # no caption: skipped
    ds = VideoFolderDataset(str(tmp_path))
    assert len(ds) == 1 and ds[0]["caption"] == "a caption"


def test_bad_sources_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        VideoFolderDataset(str(tmp_path / "missing.csv"))
    (tmp_path / "bad.csv").write_text("path,text\nx.mp4,y\n")
    with pytest.raises(ValueError, match="video_path,caption"):
        VideoFolderDataset(str(tmp_path / "bad.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="lists no video"):
        VideoFolderDataset(str(tmp_path / "empty"))


def test_clips_are_resized_to_cover_then_centre_cropped_to_the_teachers_size():
    """A 2:1 clip becomes a square one by cropping its sides, not by squashing it; frames are
    taken evenly."""
    from dollar.video import fit_clip

    frames = np.zeros((9, 40, 80, 3), np.uint8)
    frames[:, :, 20:60] = 255  # a white centre square, black side bands
    for i in range(9):
        frames[i, 0, 0, 0] = i  # frame index, to see which frames were kept
    out = fit_clip(frames, 5, 16, 16)
    assert out.shape == (5, 16, 16, 3)
    assert out[:, 2:-2, 2:-2].min() == 255  # the side bands were cropped away
    squashed = fit_clip(frames[:, :, 20:60], 5, 16, 32)  # 1:1 into 1:2: crop top and bottom
    assert squashed.shape == (5, 16, 32, 3) and squashed.min() == 255
    kept = fit_clip(frames, 3, 40, 80)[:, 0, 0, 0]
    assert kept.tolist() == [0, 4, 8]
