"""Training images degraded in known ways, captioned with the words that name them, so that a negative
prompt such as NFSD's ("unrealistic, blurry, low quality, ... dark, low-resolution, gloomy") means on the
bundled prior what it means on Stable Diffusion: a direction away from that kind of image.

Each degradation has the phrases a negative prompt uses for it; a degraded image's caption gets one phrase
per degradation, sometimes a general word of bad quality, and sometimes loses its object caption, so the
words are learnt alone (as a negative prompt is written) and beside a scene.
"""

import random
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

Degradation = Callable[[torch.Tensor, random.Random], torch.Tensor]  # float [3, H, W] in [0, 1] -> same


def _blur(x: torch.Tensor, rng: random.Random) -> torch.Tensor:
    sigma = rng.uniform(1.0, 2.0)
    radius = 3
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1.0) / sigma) ** 2)
    taps = taps / taps.sum()
    x = F.pad(x[None], (radius,) * 4, mode="replicate")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)[0]


def _dark(x: torch.Tensor, rng: random.Random) -> torch.Tensor:
    return x * rng.uniform(0.25, 0.5)


def _low_contrast(x: torch.Tensor, rng: random.Random) -> torch.Tensor:
    mean = x.mean()
    return mean + (x - mean) * rng.uniform(0.25, 0.5)


def _oversaturated(x: torch.Tensor, rng: random.Random) -> torch.Tensor:
    grey = x.mean(0, keepdim=True)
    return (grey + (x - grey) * rng.uniform(2.5, 4.0)).clamp(0.0, 1.0)


def _noisy(x: torch.Tensor, rng: random.Random) -> torch.Tensor:
    generator = torch.Generator().manual_seed(rng.getrandbits(31))
    return (x + rng.uniform(0.1, 0.2) * torch.randn(x.shape, generator=generator)).clamp(0.0, 1.0)


def _low_resolution(x: torch.Tensor, rng: random.Random) -> torch.Tensor:
    factor = rng.choice((4, 8))
    small = F.avg_pool2d(x[None], factor)
    return F.interpolate(small, size=x.shape[-2:], mode="nearest")[0]


def _tiling(x: torch.Tensor, rng: random.Random) -> torch.Tensor:
    copies = rng.choice((2, 3))
    small = F.interpolate(x[None], scale_factor=1.0 / copies, mode="area")[0]
    tiled = small.repeat(1, copies, copies)
    return F.interpolate(tiled[None], size=x.shape[-2:], mode="nearest")[0]


# name -> (the function, the phrases negative prompts use for it)
DEGRADATIONS: Dict[str, Tuple[Degradation, Tuple[str, ...]]] = {
    "blur": (_blur, ("blurry", "out of focus")),
    "dark": (_dark, ("dark", "gloomy")),
    "low_contrast": (_low_contrast, ("low contrast", "dull")),
    "oversaturated": (_oversaturated, ("oversaturated color", "oversaturated")),
    "noisy": (_noisy, ("noisy",)),
    "low_resolution": (_low_resolution, ("low-resolution",)),
    "tiling": (_tiling, ("tiling",)),
}
GENERAL = ("low quality", "ugly", "unrealistic")  # said of any degraded image


def degradation_words() -> List[str]:
    """The words of every phrase above, as the prior's word-level tokenizer splits them."""
    phrases = [p for _, names in DEGRADATIONS.values() for p in names] + list(GENERAL)
    words = {w for p in phrases for w in p.replace("-", " - ").split()}
    return sorted(words)


def degrade(image: torch.Tensor, caption: str, rng: random.Random, object_caption_prob: float = 0.7,
            general_prob: float = 0.5) -> Tuple[torch.Tensor, str]:
    """One or two random degradations of ``image`` (uint8 [3, H, W]) and its caption: the object caption
    (kept with ``object_caption_prob``) followed by the degradations' phrases in random order."""
    names = rng.sample(sorted(DEGRADATIONS), rng.choice((1, 1, 2)))
    x = image.float() / 255.0
    phrases = []
    for name in names:
        fn, words = DEGRADATIONS[name]
        x = fn(x, rng)
        phrases.append(rng.choice(words))
    if rng.random() < general_prob:
        phrases.append(rng.choice(GENERAL))
    rng.shuffle(phrases)
    text = ", ".join(([caption] if rng.random() < object_caption_prob else []) + phrases)
    return (x.clamp(0.0, 1.0) * 255.0).round().byte(), text


def degrade_batch(images: torch.Tensor, captions: Sequence[str], prob: float, rng: random.Random) -> Tuple[torch.Tensor, List[str]]:
    """Each image of the batch (uint8 [B, 3, H, W]) degraded with probability ``prob``."""
    images, captions = images.clone(), list(captions)
    for i in range(len(captions)):
        if rng.random() < prob:
            images[i], captions[i] = degrade(images[i], captions[i], rng)
    return images, captions
