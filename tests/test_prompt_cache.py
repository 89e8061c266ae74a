"""The pipeline's prompt-embedding cache: a repeated prompt never runs the text encoder again,
anything that changes the states misses, and the cache stays bounded."""

import copy

import numpy as np
import pytest
import torch

from dollar.pipeline import PromptEmbeddingCache


@pytest.fixture()
def encoder_calls(tiny_pipeline):
    """How many times the text encoder has run (a forward hook counts)."""
    calls = []
    handle = tiny_pipeline.text_encoder.register_forward_hook(lambda module, args, out: calls.append(1))
    yield calls
    handle.remove()


def _run(pipe, prompt, **kw):
    return pipe(prompt, num_inference_steps=1, generator=torch.Generator().manual_seed(0), **kw)


def test_a_repeated_prompt_does_not_run_the_text_encoder_and_a_new_one_does(tiny_pipeline, encoder_calls):
    first = _run(tiny_pipeline, "a red circle moving left", guidance_scale=1.0)
    assert len(encoder_calls) == 1
    second = _run(tiny_pipeline, "a red circle moving left", guidance_scale=1.0)
    assert len(encoder_calls) == 1  # cached
    assert np.array_equal(first.frames, second.frames)  # and the video is the same
    _run(tiny_pipeline, "a blue square growing", guidance_scale=1.0)
    assert len(encoder_calls) == 2
    # with guidance the empty negative prompt is encoded once, then cached like any prompt
    _run(tiny_pipeline, "a blue square growing", guidance_scale=4.5)
    _run(tiny_pipeline, "a blue square growing", guidance_scale=4.5)
    assert len(encoder_calls) == 3
    print(
        f"text encoder runs: {len(encoder_calls)}; cache hits {tiny_pipeline.prompt_cache.hits}, misses {tiny_pipeline.prompt_cache.misses}"
    )


def test_cached_states_are_the_encoders_own_and_a_batch_encodes_only_its_new_prompts(tiny_pipeline, encoder_calls):
    pipe = tiny_pipeline
    fresh = pipe.family.encode_prompts(pipe.tokenizer, pipe.text_encoder, ["a red circle", "a green star"], pipe.text_length)
    encoder_calls.clear()
    pipe.encode_text(["a red circle"])
    batch = pipe.encode_text(["a red circle", "a green star", "a red circle"])
    assert len(encoder_calls) == 2 and batch.shape == (3, pipe.text_length, 384)
    torch.testing.assert_close(batch[:2], fresh, atol=1e-5, rtol=0)
    assert torch.equal(batch[0], batch[2])
    batch[0].zero_()  # a caller's in-place change does not reach the cache
    assert pipe.encode_text(["a red circle"]).abs().sum() > 0


def test_whatever_changes_the_states_misses(tiny_pipeline, encoder_calls):
    pipe = tiny_pipeline
    pipe.encode_text(["a red circle"])
    pipe.encode_text(["a red circle"], max_sequence_length=32)  # another length
    assert len(encoder_calls) == 2
    with torch.no_grad():
        pipe.text_encoder.embeddings.word_embeddings.weight.mul_(1.0)  # an in-place update of the weights
    pipe.encode_text(["a red circle"])
    assert len(encoder_calls) == 3
    before = len(pipe.prompt_cache)
    pipe.text_encoder = copy.deepcopy(pipe.text_encoder)  # another encoder: the cache empties
    pipe.encode_text(["a red circle"])
    assert before >= 2 and len(pipe.prompt_cache) == 1


def test_the_cache_is_bounded_and_drops_the_least_recently_used():
    cache = PromptEmbeddingCache(max_entries=2, max_bytes=10_000)
    a, b, c = (torch.full((4, 8), float(i)) for i in range(3))  # 128 bytes each
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # "a" is now the most recent
    cache.put("c", c)
    assert len(cache) == 2 and cache.get("b") is None and cache.get("a") is a and cache.get("c") is c
    small = PromptEmbeddingCache(max_entries=100, max_bytes=300)
    for key, t in zip("abc", (a, b, c)):
        small.put(key, t)
    assert len(small) == 2 and small.get("a") is None  # 3 x 128 bytes > 300
    small.put("big", torch.zeros(100))  # larger than the whole budget: not stored, nothing evicted
    assert small.get("big") is None and len(small) == 2


def test_the_pipeline_cache_evicts_under_its_bound(tiny_pipeline, encoder_calls):
    tiny_pipeline.prompt_cache = PromptEmbeddingCache(max_entries=2)
    for p in ("one", "two", "three", "one"):
        tiny_pipeline.encode_text([p])
    assert len(encoder_calls) == 4 and len(tiny_pipeline.prompt_cache) == 2  # "one" was dropped, then encoded again
