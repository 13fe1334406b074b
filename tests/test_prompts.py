"""View labels, PromptSet conditions and the on-disk text-embedding cache."""

from __future__ import annotations

import pytest
import torch

from sds3d.cameras import make_cameras, view_labels
from sds3d.config import load_config
from sds3d.guides.prompts import EmbeddingCache, PromptSet

L, D = 77, 16


@pytest.mark.parametrize(
    "elevation, azimuth, label",
    [
        (0.0, 0.0, "front"),
        (0.0, 44.9, "front"),
        (0.0, -44.9, "front"),
        (0.0, 45.0, "side"),  # |azimuth| < 45 is front: 45 itself is not
        (0.0, -90.0, "side"),
        (0.0, 135.0, "side"),  # back needs |azimuth| > 180 - 45
        (0.0, 135.1, "back"),
        (0.0, 180.0, "back"),
        (0.0, -179.0, "back"),
        (0.0, 190.0, "back"),  # wraps to -170
        (0.0, 330.0, "front"),  # wraps to -30
        (0.0, -30.0, "front"),
        (0.0, 400.0, "front"),  # wraps to 40
        (60.0, 0.0, "front"),  # overhead needs elevation > 60
        (60.1, 180.0, "overhead"),
        (89.0, 90.0, "overhead"),
        (-30.0, 180.0, "back"),
    ],
)
def test_view_labels_default_thresholds(elevation, azimuth, label):
    assert view_labels(torch.tensor([elevation]), torch.tensor([azimuth])) == [label]


def test_view_labels_custom_thresholds_and_batch():
    elevation = torch.tensor([0.0, 0.0, 0.0, 35.0])
    azimuth = torch.tensor([50.0, 100.0, -100.0, 0.0])
    labels = view_labels(elevation, azimuth, front=60.0, back=90.0, overhead=30.0)
    assert labels == ["front", "back", "back", "overhead"]


class FakeGuide:
    """embed gives every distinct prompt its own constant tensor and records what it was asked."""

    def __init__(self):
        self.table = {}
        self.calls = []

    def embed(self, prompts):
        self.calls.append(list(prompts))
        for p in prompts:
            self.table.setdefault(p, torch.full((L, D), float(len(self.table))))
        return torch.stack([self.table[p] for p in prompts])


def prompt_config(*overrides):
    return load_config(prompt="a hamburger", overrides=list(overrides)).prompt


def four_cameras():
    # front, side, back, overhead under the default thresholds
    elevation = torch.tensor([10.0, 0.0, -5.0, 75.0])
    azimuth = torch.tensor([-20.0, 90.0, 200.0, 180.0])
    return make_cameras(elevation, azimuth, torch.full((4,), 2.0), torch.full((4,), 50.0), 8, 8)


def test_conditions_view_dependent_rows():
    guide = FakeGuide()
    conditions = PromptSet(guide, prompt_config()).conditions(four_cameras())
    assert conditions.labels == ["front", "side", "back", "overhead"]
    expected = [guide.table[f"a hamburger, {v} view"] for v in ("front", "side", "back", "overhead")]
    assert conditions.cond.shape == (4, L, D)
    assert torch.equal(conditions.cond, torch.stack(expected))


def test_uncond_is_empty_prompt_without_negative():
    guide = FakeGuide()
    conditions = PromptSet(guide, prompt_config()).conditions(four_cameras())
    empty = guide.table[""].expand(4, L, D)
    assert torch.equal(conditions.negative, empty)
    assert torch.equal(conditions.empty, empty)


def test_uncond_is_negative_prompt_when_set():
    guide = FakeGuide()
    conditions = PromptSet(guide, prompt_config("prompt.negative=blurry")).conditions(four_cameras())
    assert conditions.negative.shape == (4, L, D)
    assert torch.equal(conditions.negative, guide.table["blurry"].expand(4, L, D))
    assert torch.equal(conditions.empty, guide.table[""].expand(4, L, D))
    assert not torch.equal(guide.table["blurry"], guide.table[""])


def test_view_independent_uses_plain_prompt():
    guide = FakeGuide()
    conditions = PromptSet(guide, prompt_config("prompt.view_dependent=false")).conditions(four_cameras())
    assert torch.equal(conditions.cond, guide.table["a hamburger"].expand(4, L, D))
    assert conditions.labels == ["front", "side", "back", "overhead"]


def test_prompt_set_embeds_once_at_construction():
    guide = FakeGuide()
    prompts = PromptSet(guide, prompt_config())
    for _ in range(3):
        prompts.conditions(four_cameras())
    assert len(guide.calls) == 1
    assert {"a hamburger", "", "a hamburger, back view", "a hamburger, overhead view"} <= set(guide.calls[0])


def test_prompt_set_thresholds_come_from_config():
    guide = FakeGuide()
    config = prompt_config("prompt.front_threshold=100.0")
    conditions = PromptSet(guide, config).conditions(four_cameras())
    assert conditions.labels == ["front", "front", "back", "overhead"]


def test_embedding_cache_round_trip(tmp_path):
    cache = EmbeddingCache(str(tmp_path), "model-a")
    assert cache.get("a cat") is None
    value = torch.arange(12, dtype=torch.float64).view(3, 4)
    cache.put("a cat", value)
    got = cache.get("a cat")
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    assert torch.equal(got, value.float())
    assert cache.path("a cat").parent == tmp_path / "text_embeddings"
    assert EmbeddingCache(str(tmp_path), "model-a").get("a cat") is not None  # persisted on disk


def test_embedding_cache_keys_by_model_and_prompt(tmp_path):
    a, b = EmbeddingCache(str(tmp_path), "model-a"), EmbeddingCache(str(tmp_path), "model-b")
    assert a.path("a cat") != b.path("a cat")
    assert a.path("a cat") != a.path("a dog")
    a.put("a cat", torch.ones(2))
    assert b.get("a cat") is None
    assert a.get("a dog") is None


def test_a_corrupt_cache_entry_is_recomputed_and_an_unwritable_cache_only_warns(tmp_path, caplog):
    from sds3d.guides.prompts import EmbeddingCache

    cache = EmbeddingCache(str(tmp_path), "model")
    cache.put("a red cube", torch.ones(2, 3))
    cache.path("a red cube").write_bytes(b"not a tensor")
    with caplog.at_level("WARNING", logger="sds3d"):
        assert cache.get("a red cube") is None
    assert "unreadable" in caplog.text
    (tmp_path / "blocked").write_text("")
    blocked = EmbeddingCache(str(tmp_path / "blocked"), "model")  # its folder would sit under a file
    with caplog.at_level("WARNING", logger="sds3d"):
        blocked.put("a red cube", torch.ones(2, 3))
    assert "cannot write the text-embedding cache" in caplog.text and blocked.get("a red cube") is None
