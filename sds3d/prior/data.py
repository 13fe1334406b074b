"""Captioned training images of the world, rendered from the trainer's camera distribution."""

import random
from typing import List, Tuple

import torch

from sds3d.cameras import camera_features, sample_cameras, view_labels
from sds3d.world.render import render_scenes
from sds3d.world.scenes import PAIR_PROB, sample_scene


def render_dataset(count: int, resolution: int, cameras_cfg, seed: int, view_suffix_prob: float = 0.8,
                   held_out: bool = False, pair_prob: float = PAIR_PROB, chunk: int = 128
                   ) -> Tuple[torch.Tensor, List[str], torch.Tensor, torch.Tensor]:
    """``count`` images (uint8 [N, 3, H, W]), captions, their cameras' ``camera_features`` [N, F] and the index of
    the object each pixel shows (int8 [N, H, W], -1 on the background), deterministic by ``seed``.

    A caption carries the camera's view suffix (", front view", ...) with ``view_suffix_prob``, so the
    prior learns what view-dependent prompts mean; ``pair_prob`` of the scenes are pairs.
    """
    rng = random.Random(seed)
    images, captions, features, object_ids = [], [], [], []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for start in range(0, count, chunk):
            scenes = [sample_scene(rng, pair_prob, held_out=held_out) for _ in range(min(chunk, count - start))]
            cameras = sample_cameras(cameras_cfg, resolution, resolution, batch_size=len(scenes))
            render = render_scenes(scenes, cameras)
            images.append((render.rgb.clamp(0, 1) * 255).round().byte().permute(0, 3, 1, 2))
            object_ids.append(render.object_ids.to(torch.int8))
            features.append(camera_features(cameras))
            labels = view_labels(cameras.elevation, cameras.azimuth)
            captions += [f"{s.caption}, {v} view" if rng.random() < view_suffix_prob else s.caption for s, v in zip(scenes, labels)]
    return torch.cat(images), captions, torch.cat(features), torch.cat(object_ids)
