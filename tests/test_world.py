import re

import numpy as np
import pytest

from dollar import world
from dollar.checker import check_video, checker_accuracy, classify_colour


def test_same_seed_same_clip_and_caption():
    a, ca, _ = world.make_sample(123)
    b, cb, _ = world.make_sample(123)
    c, _, _ = world.make_sample(124)
    assert a.dtype == np.uint8 and a.shape == (world.NUM_FRAMES, world.HEIGHT, world.WIDTH, 3)
    assert np.array_equal(a, b) and ca == cb
    assert not np.array_equal(a, c)


def test_vocabulary_meets_the_brief():
    assert len(world.COLOURS) >= 8 and len(world.SHAPES) >= 5 and len(world.BACKGROUNDS) >= 3
    assert {"left", "right", "up", "down", "static", "bouncing", "growing", "shrinking"} <= set(world.MOTIONS)
    for table in (world.MOTION_PHRASES, world.SHAPE_PHRASES, world.SIZE_PHRASES, world.SPEED_PHRASES, world.BACKGROUND_PHRASES):
        assert all(len(set(p)) >= 3 for p in table.values())


@pytest.mark.parametrize("vocabulary", world.VOCABULARIES)
@pytest.mark.parametrize("level", [1, 2])
def test_captions_name_the_attributes_of_the_scene(level, vocabulary):
    for seed in range(150):
        _, text, scene = world.make_sample(seed, level=level, vocabulary=vocabulary)
        objects, background = world.parse_prompt(text)
        assert background == scene.background, text
        assert len(objects) == level, text
        for parsed, obj in zip(objects, scene.objects):
            assert (parsed["colour"], parsed["shape"], parsed["motion"], parsed["size"]) == (obj.colour, obj.shape, obj.motion, obj.size), (
                text
            )
            if obj.motion in world.TRANSLATIONS or obj.motion == "bouncing":
                assert parsed["speed"] == obj.speed, text


def test_captions_vary_in_phrasing():
    texts = {world.make_sample(s)[1] for s in range(40)}
    assert len(texts) == 40
    motion_phrases = {p for s in range(200) for p in world.MOTION_PHRASES["left"] if p in world.make_sample(s)[1]}
    assert len(motion_phrases) >= 2


def test_heldout_combinations_never_appear_in_training():
    held = set(world.heldout_combinations())
    assert len(held) == 64
    for seed in range(400):
        _, _, scene = world.make_sample(seed, level=1 + seed % 2)
        assert all((o.colour, o.shape, o.motion) not in held for o in scene.objects)
    # ...while every colour, shape and motion still occurs in training.
    seen = [world.make_sample(s)[2].objects[0] for s in range(600)]
    assert {o.colour for o in seen} == set(world.COLOURS)
    assert {o.shape for o in seen} == set(world.SHAPES)
    assert {o.motion for o in seen} == set(world.MOTIONS)


def test_heldout_prompts_are_fixed_and_parse_back():
    a, b = world.heldout_prompts(), world.heldout_prompts()
    assert [p.prompt for p in a] == [p.prompt for p in b] and len(a) == 64
    for p in a:
        (parsed,), background = world.parse_prompt(p.prompt)
        assert (parsed["colour"], parsed["shape"], parsed["motion"]) == (p.objects[0].colour, p.objects[0].shape, p.objects[0].motion)
        assert background == p.background


def test_per_sample_randomness():
    obj = world.ObjectSpec("red", "circle", "left", "slow", "small")
    clips = [world.render(world.make_scene((obj,), "black", seed=s)) for s in range(4)]
    assert len({c.tobytes() for c in clips}) == 4


def test_checker_scores_real_videos_perfectly_and_shuffled_prompts_near_chance():
    prompts = world.heldout_prompts()
    videos = [world.render(world.make_scene(p.objects, p.background, seed=1)) for p in prompts]
    real = checker_accuracy(videos, [p.objects for p in prompts])
    assert real["colour"] == 1.0 and real["motion"] == 1.0
    order = np.random.default_rng(0).permutation(len(prompts))
    shuffled = checker_accuracy(videos, [prompts[i].objects for i in order])
    assert shuffled["colour"] < 0.35 and shuffled["motion"] < 0.35


def test_checker_reads_free_text_prompts():
    video, text, _ = world.make_sample(5)
    (verdict,) = check_video(video, text)
    assert verdict.colour_ok and verdict.motion_ok
    blank = np.zeros_like(video)
    (verdict,) = check_video(blank, text)
    assert not verdict.colour_ok and not verdict.motion_ok


def test_colour_classifier_on_pure_hues():
    assert classify_colour([255, 0, 0]) == "red"
    assert classify_colour([0, 0, 255]) == "blue"
    assert classify_colour([240, 240, 240]) == "white"
    assert classify_colour([0, 255, 255]) == "cyan"


def test_render_masks_mark_where_each_object_is_drawn():
    video, _, scene = world.make_sample(700_001, level=2, split="eval")
    masks = world.render_masks(scene)
    assert masks.shape == (2, world.NUM_FRAMES, world.HEIGHT, world.WIDTH)
    assert masks.min() >= 0 and masks.max() <= 1 and (masks.sum((2, 3)) > 20).all()
    background = world.render(world.Scene((), scene.background, {"objects": [], "background": scene.params["background"]}))
    for k, params in enumerate(scene.params["objects"]):  # fully covered pixels have the object's colour
        inside = masks[k] > 0.99
        np.testing.assert_allclose(video[inside].mean(0), params["rgb"] * 255, atol=1.5)
    # pixels no object covers are the background
    empty = masks.sum(0) == 0
    np.testing.assert_array_equal(video[empty], background[empty])
    assert (masks.sum(0) <= 1 + 1e-6).all()  # visible coverage: the later object hides the earlier
    np.testing.assert_array_equal(world.render_masks(scene, frames=[0, 8, 16]), masks[:, [0, 8, 16]])


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z-]+", text.lower()))


def test_rich_captions_use_training_synonyms_and_never_a_heldout_one():
    captions = [world.make_sample(seed, level=1 + seed % 2, vocabulary="rich")[1] for seed in range(600)]
    seen = set().union(*map(_words, captions))
    train = {w for t in (world.COLOUR_SYNONYMS, world.SHAPE_SYNONYMS) for ps in t.values() for p in ps for w in p.split()}
    heldout = {p for t in (world.HELDOUT_COLOUR_SYNONYMS, world.HELDOUT_SHAPE_SYNONYMS) for ps in t.values() for p in ps}
    assert len(train & seen) >= 0.9 * len(train)
    joined = " | ".join(captions)
    assert not [p for p in heldout if re.search(rf"\\b{re.escape(p)}\\b", joined)]
    # The world's own vocabulary is untouched: the same seed gives the caption it always gave.
    assert world.make_sample(5)[1] == world.make_sample(5, vocabulary="world")[1]
    assert world.make_sample(5)[1] != world.make_sample(5, vocabulary="rich")[1] or world.make_sample(6)[1] != world.make_sample(6, vocabulary="rich")[1]


@pytest.mark.parametrize("synonyms", ["world", "train", "heldout"])
def test_synonym_prompts_are_the_heldout_prompts_in_other_words(synonyms):
    specs = world.synonym_prompt_specs(synonyms)
    reference = world.heldout_prompt_specs()
    assert [s.objects for s in specs] == [r.objects for r in reference]
    table = {"world": None, "train": world.COLOUR_SYNONYMS, "heldout": world.HELDOUT_COLOUR_SYNONYMS}[synonyms]
    for spec in specs:
        obj = spec.objects[0]
        parsed = world.parse_prompt(spec.prompt)[0][0]
        assert (parsed["colour"], parsed["shape"]) == (obj["colour"], obj["shape"]), spec.prompt
        if table is not None:
            text = spec.prompt.lower()
            for phrase in (p for ps in world.BACKGROUND_PHRASES.values() for p in ps):
                text = text.replace(phrase, "")
            assert any(word in text for word in table[obj["colour"]]) and obj["colour"] not in _words(text), spec.prompt
    with pytest.raises(ValueError, match="synonyms must be one of"):
        world.synonym_prompt_specs("slang")
