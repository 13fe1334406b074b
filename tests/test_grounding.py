"""The prior's grounding losses (the token and pixel terms, each tested through a wrapper below): which tokens
belong to which object, the losses' exact values, the attention recorder leaving the UNet's output as it was, and
training with them."""

import json

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from sds3d.cameras import CAMERA_FEATURES
from sds3d.guides.pixel import PixelGuide
from sds3d.prior.grounding import grounding_losses, object_masks, object_token_matrix, record_cross_attention
from sds3d.prior.model import build_prior, build_tokenizer
from sds3d.prior.train import encode, train_prior


def grounding_loss(maps, tokens, masks):
    return grounding_losses(maps, tokens, masks)[0]


def pixel_grounding_loss(maps, tokens, masks):
    return grounding_losses(maps, tokens, masks)[1]


def test_each_objects_colour_and_shape_words_are_its_tokens():
    captions = ["an orange sphere to the left of an orange cone, front view", "a red cube", "a blue torus, low quality"]
    matrix = object_token_matrix(build_tokenizer(), captions, grounded=[True, True, False])
    # [BOS] an orange sphere to the left of an orange cone ...: the first object's words at 2, 3, the second's at 9, 10
    assert matrix[0].nonzero().tolist() == [[2, 0], [3, 0], [9, 1], [10, 1]]
    assert matrix[1].nonzero().tolist() == [[2, 0], [3, 0]]
    assert not matrix[2].any()


def test_grounding_loss_is_the_squared_share_of_attention_off_the_object():
    masks = torch.zeros(1, 2, 4, 4)
    masks[0, 0, :2, :2] = 1.0  # object 0: the top-left quarter
    masks[0, 1, 2:, 2:] = 1.0
    tokens = torch.zeros(1, 3, 2)
    tokens[0, 0, 0] = tokens[0, 1, 1] = 1.0  # token 2 belongs to no object
    on_object = masks.flatten(2).transpose(1, 2)  # [1, 16, 2]: each token's attention on its own object's pixels
    attention = torch.cat([on_object, torch.ones(1, 16, 1)], dim=-1)
    assert grounding_loss([attention], tokens, masks) == 0.0
    uniform = torch.full((1, 16, 3), 1.0 / 3.0)
    assert grounding_loss([uniform], tokens, masks).item() == pytest.approx((1 - 0.25) ** 2)
    # a coarser map sees the masks area-averaged: the 2x2 map's top-left cell is all object 0
    coarse = torch.zeros(1, 4, 3)
    coarse[0, 0, 0] = coarse[0, 3, 1] = 1.0
    assert grounding_loss([coarse, attention], tokens, masks) == 0.0
    assert grounding_loss([uniform], torch.zeros(1, 3, 2), masks) == 0.0


def test_pixel_grounding_loss_is_the_squared_share_of_each_object_pixels_attention_off_its_words():
    masks = torch.zeros(1, 2, 4, 4)
    masks[0, 0, :2, :2] = 1.0
    masks[0, 1, 2:, 2:] = 1.0
    tokens = torch.zeros(1, 3, 2)
    tokens[0, 0, 0] = tokens[0, 1, 1] = 1.0
    uniform = torch.full((1, 16, 3), 1.0 / 3.0)
    assert pixel_grounding_loss([uniform], tokens, masks).item() == pytest.approx((1 - 1 / 3) ** 2)
    # object 0's pixels all on its word, object 1's half on its own and half on token 2: only object 1's pixels pay
    attention = torch.zeros(1, 16, 3)
    attention[0, :, 0] = masks[0, 0].flatten()
    attention[0, :, 1] = attention[0, :, 2] = 0.5 * masks[0, 1].flatten()
    assert pixel_grounding_loss([attention], tokens, masks).item() == pytest.approx(0.5 * 0.5 ** 2)
    # an object whose caption names none of its words (not grounded) is left out
    assert pixel_grounding_loss([attention], tokens * torch.tensor([1.0, 0.0]), masks) == 0.0


def test_object_masks_are_one_hot_by_object_index():
    ids = torch.tensor([[[-1, 0], [1, 1]]], dtype=torch.int8)
    assert object_masks(ids).tolist() == [[[[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]]]


def test_the_recorder_keeps_the_unets_output_and_records_each_cross_attention():
    torch.manual_seed(0)
    prior = build_prior(resolution=16, channels=(8, 16))
    captions = ["a red cube to the left of a blue sphere", "a green cone"]
    x_t, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 900])
    embeddings, unknown_camera = encode(prior, captions), torch.zeros(2, CAMERA_FEATURES)
    with torch.no_grad():
        before = prior.unet(x_t, t, encoder_hidden_states=embeddings, class_labels=unknown_camera).sample
        recorder = record_cross_attention(prior.unet)
        after = prior.unet(x_t, t, encoder_hidden_states=embeddings, class_labels=unknown_camera).sample
    torch.testing.assert_close(after, before)
    cross = [name for name in prior.unet.attn_processors if name.endswith("attn2.processor")]
    assert len(recorder.maps) == len(cross) > 0
    assert all(isinstance(p, AttnProcessor2_0) for p in prior.unet.attn_processors.values())
    for attention in recorder.maps:
        assert attention.shape[0] == 2 and attention.shape[2] == embeddings.shape[1]
        torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[:2]))
    # with a text mask (as a T5 guide may pass), the recorded maps leave the masked tokens out, as the output does
    mask = (torch.arange(embeddings.shape[1]) < 5).float().expand(2, -1)
    recorder.maps.clear()
    with torch.no_grad():
        masked = prior.unet(x_t, t, encoder_hidden_states=embeddings, class_labels=unknown_camera, encoder_attention_mask=mask).sample
        prior.unet.set_attn_processor(AttnProcessor2_0())
        torch.testing.assert_close(masked, prior.unet(x_t, t, encoder_hidden_states=embeddings, class_labels=unknown_camera,
                                                      encoder_attention_mask=mask).sample)
    assert not torch.allclose(masked, before)
    assert all(attention[..., 5:].max() < 1e-6 for attention in recorder.maps)


def test_descending_the_grounding_loss_moves_the_words_attention_onto_their_objects():
    torch.manual_seed(0)
    prior = build_prior(resolution=16, channels=(8, 16))
    recorder = record_cross_attention(prior.unet)
    captions = ["a red cube to the left of a blue sphere", "a green cone on top of a yellow torus"]
    ids = torch.full((2, 16, 16), -1, dtype=torch.int8)
    ids[:, :, :6], ids[:, :, 10:] = 0, 1  # object 0 on the left, object 1 on the right
    tokens, masks = object_token_matrix(prior.tokenizer, captions, [True, True]), object_masks(ids)
    x_t, t = torch.randn(2, 3, 16, 16), torch.tensor([300, 600])
    params = list(prior.unet.parameters()) + list(prior.text_encoder.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(15):
        prior.unet(x_t, t, encoder_hidden_states=encode(prior, captions), class_labels=torch.zeros(2, CAMERA_FEATURES))
        loss = sum(grounding_losses(recorder.maps, tokens, masks))
        recorder.maps.clear()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_a_prior_trained_with_grounding_logs_it_and_loads_as_a_plain_guide(tmp_path):
    out_dir, work_dir = tmp_path / "prior", tmp_path / "work"
    train_prior(out_dir, work_dir, steps=2, batch_size=4, dataset_size=16, resolution=16, channels=(8, 16), log_every=1,
                pair_prob=1.0, degrade_prob=0.0, cond_dropout=0.0, grounding=0.01, pixel_grounding=0.01)
    logged = [json.loads(line) for line in (work_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged] == [1, 2]
    assert all(0.0 < row[key] <= 1.0 for row in logged for key in ("grounding", "pixel_grounding"))
    guide = PixelGuide.from_pretrained(str(out_dir), torch.device("cpu"), "fp32", cache_dir=str(tmp_path / "cache"))
    eps = guide.predict_noise(torch.randn(1, 3, 16, 16), torch.tensor([500]), guide.embed(["a red cube"])[:, None])
    assert torch.isfinite(eps).all()
