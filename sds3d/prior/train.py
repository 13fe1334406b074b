"""Training the bundled prior: epsilon-prediction DDPM loss on world renders, text encoder trained
jointly, EMA weights exported in diffusers format. Resumable from ``<work_dir>/ckpt.pt``."""

import json
import logging
import math
import random
import shutil
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.training_utils import EMAModel
from omegaconf import OmegaConf
from transformers import AutoConfig
from tqdm import tqdm

from sds3d.atomic import atomic_write
from sds3d.checkpoint import rng_state, set_rng_state
from sds3d.config_schema import CameraConfig
from sds3d.errors import ConfigError
from sds3d.guides.base import padding_mask
from sds3d.prior.data import render_dataset
from sds3d.prior.degrade import degrade_batch
from sds3d.prior.grounding import grounding_losses, object_masks, object_token_matrix, record_cross_attention
from sds3d.prior.model import MAX_TOKENS, TEXT_ENCODERS, Prior, build_prior
from sds3d.world.scenes import PAIR_PROB

log = logging.getLogger("sds3d")


def encode(prior: Prior, captions) -> torch.Tensor:
    """The text encoder's hidden states [B, MAX_TOKENS, D], read as the guide reads them (``TextEmbedder``)."""
    tokens = prior.tokenizer(list(captions), padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")
    return prior.text_encoder(tokens.input_ids, attention_mask=padding_mask(prior.text_encoder.config, tokens)).last_hidden_state


def load_dataset(work_dir: Path, count: int, resolution: int, seed: int, pair_prob: float):
    """Rendered once and cached in the work folder (the renders, not the model, are the slow part to redo)."""
    path = work_dir / f"dataset-{count}-{resolution}-{seed}-pairs{pair_prob:g}-objects.pt"
    if path.is_file():
        data = torch.load(path, weights_only=False)
        return data["images"], data["captions"], data["cameras"], data["object_ids"]
    cameras = OmegaConf.structured(CameraConfig)  # a default run's cameras: the images show what runs render
    images, captions, features, object_ids = render_dataset(count, resolution, cameras, seed, pair_prob=pair_prob)
    with atomic_write(path) as tmp:
        torch.save({"images": images, "captions": captions, "cameras": features, "object_ids": object_ids}, tmp)
    return images, captions, features, object_ids


def export_ema(prior: Prior, modules: nn.ModuleDict, ema: EMAModel, out_dir: Path) -> None:
    """Writes the EMA weights to ``out_dir`` (via a temporary folder renamed into place)."""
    ema.store(modules.parameters())
    ema.copy_to(modules.parameters())
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    prior.save(tmp)
    ema.restore(modules.parameters())
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


def warm_start(prior: Prior, folder: Path) -> None:
    """Copies a saved prior's weights into ``prior``, whose tokenizer may know more words and take longer
    prompts: the old token and position embeddings keep their rows, the new rows keep their fresh init.
    A camera-blind prior's UNet leaves the camera embedding as built (its output layer zero); a text encoder of
    another kind (CLIP for T5) is not copied: the new one starts fresh and the UNet learns to read it."""
    missing, unexpected = prior.unet.load_state_dict(
        UNet2DConditionModel.from_pretrained(folder / "unet").float().state_dict(), strict=False)
    if unexpected or any(not name.startswith("class_embedding.") for name in missing):
        raise ValueError(f"{folder} is not a prior of this architecture (missing {missing}, unexpected {unexpected})")
    old_config = AutoConfig.from_pretrained(folder / "text_encoder")
    if old_config.model_type != prior.text_encoder.config.model_type:
        log.info("prior: the %s text encoder starts fresh (%s has a %s one)", prior.text_encoder.config.model_type, folder,
                 old_config.model_type)
        return
    new_state = prior.text_encoder.state_dict()
    old_state = type(prior.text_encoder).from_pretrained(folder / "text_encoder").state_dict()
    for name, value in old_state.items():
        if new_state[name].shape == value.shape:
            new_state[name] = value
        else:  # the embedding tables: copy the leading rows the old model had
            new_state[name][: value.shape[0]] = value
    prior.text_encoder.load_state_dict(new_state)


LR_SCHEDULES = {
    "constant": lambda progress: 1.0,
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
}


def learning_rate(base: float, schedule: str, step: int, steps: int) -> float:
    """The rate at ``step`` of ``steps``: a function of the step alone, so a resumed run follows the same curve."""
    return base * LR_SCHEDULES[schedule](step / steps)


def train_prior(out_dir: Path, work_dir: Path, steps: int, batch_size: int = 32, lr: float = 1e-3,
                dataset_size: int = 12000, resolution: int = 32, seed: int = 0, cond_dropout: float = 0.1,
                save_every: int = 250, log_every: int = 25, channels=(32, 64, 64), degrade_prob: float = 0.25,
                camera_dropout: float = 0.1, pair_prob: float = PAIR_PROB, init: Path = None,
                lr_schedule: str = "constant", text_encoder: str = "clip", grounding: float = 0.0,
                pixel_grounding: float = 0.0) -> Path:
    """``lr_schedule``: ``constant``, or ``cosine`` (decays to 0 at ``steps``);
    ``degrade_prob``: chance that a training image is degraded and captioned so (``degrade.py``);
    ``pair_prob``: share of the rendered scenes that are pairs;
    ``camera_dropout``: chance that its camera is given as unknown (for callers without cameras);
    ``init``: a saved prior folder to start from (ignored when the work folder holds a checkpoint);
    ``text_encoder``: ``clip`` or ``t5`` (``model.TEXT_ENCODERS``), kept by the checkpoint: a resume must name the same;
    ``grounding``, ``pixel_grounding``: weights of the grounding losses (``grounding.py``) on the undegraded captioned
    images, 0 for none."""
    if lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"unknown learning-rate schedule {lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
    if text_encoder not in TEXT_ENCODERS:
        raise ConfigError(f"unknown text encoder {text_encoder!r}; choose one of {', '.join(TEXT_ENCODERS)}")
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    ckpt_path = work_dir / "ckpt.pt"
    state = torch.load(ckpt_path, weights_only=False) if ckpt_path.is_file() else None
    if state is not None and state.get("text_encoder", "clip") != text_encoder:
        raise ConfigError(f"the checkpoint in {work_dir} has a {state.get('text_encoder', 'clip')} text encoder, not {text_encoder}",
                          hint=f"resume with --text-encoder {state.get('text_encoder', 'clip')}, or give another --work folder")
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    images, captions, cameras, object_ids = load_dataset(work_dir, dataset_size, resolution, seed, pair_prob)
    prior = build_prior(resolution, channels, text_encoder=text_encoder)
    recorder = record_cross_attention(prior.unet) if grounding > 0 or pixel_grounding > 0 else None
    if init is not None and state is None:
        warm_start(prior, Path(init))
        log.info("prior: starting from %s", init)
    modules = nn.ModuleDict({"unet": prior.unet, "text_encoder": prior.text_encoder})
    optimizer = torch.optim.AdamW(modules.parameters(), lr=lr, weight_decay=1e-4)
    ema = EMAModel(modules.parameters(), decay=0.999, use_ema_warmup=True, power=0.75)
    alphas = prior.scheduler.alphas_cumprod
    start = 0
    if state is not None:
        modules.load_state_dict(state["modules"])
        optimizer.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        start = state["step"]
        log.info("prior: resuming at step %d", start)
    metrics = (work_dir / "metrics.jsonl").open("a")
    began = time.perf_counter()
    for step in tqdm(range(start, steps), initial=start, total=steps, desc="prior", unit="step"):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(lr, lr_schedule, step, steps)
        idx = torch.randint(0, images.shape[0], (batch_size,))
        # Keyed by the step, so a resumed run degrades the same images the same way.
        batch, text = degrade_batch(images[idx], [captions[i] for i in idx.tolist()], degrade_prob, random.Random(seed * 1_000_003 + step))
        x = batch.float() / 127.5 - 1.0
        text = ["" if torch.rand(()).item() < cond_dropout else caption for caption in text]
        known = (torch.rand(batch_size, 1) >= camera_dropout).float()
        t = torch.randint(0, alphas.shape[0], (batch_size,))
        noise = torch.randn_like(x)
        a = alphas[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x + (1 - a).sqrt() * noise
        embeddings = encode(prior, text)
        denoising = F.mse_loss(prior.unet(x_t, t, encoder_hidden_states=embeddings, class_labels=cameras[idx] * known).sample, noise)
        logged = {"loss": denoising.item()}
        loss = denoising
        if recorder is not None:  # only the images as rendered and captioned: a degradation may move the objects
            as_rendered = [caption == captions[i] for caption, i in zip(text, idx.tolist())]
            words_on_objects, pixels_on_words = grounding_losses(
                recorder.maps, object_token_matrix(prior.tokenizer, text, as_rendered), object_masks(object_ids[idx]))
            recorder.maps.clear()  # the losses hold what backward needs; a saved copy of the UNet must not hold graphs
            logged.update(grounding=words_on_objects.item(), pixel_grounding=pixels_on_words.item())
            loss = denoising + grounding * words_on_objects + pixel_grounding * pixels_on_words
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(modules.parameters(), 1.0)
        optimizer.step()
        ema.step(modules.parameters())
        done = step + 1
        if done % log_every == 0:
            rate = (done - start) / (time.perf_counter() - began)
            metrics.write(json.dumps({"step": done, **logged, "steps_per_s": rate}) + "\n")
            metrics.flush()
        if done % save_every == 0 or done == steps:
            with atomic_write(ckpt_path) as tmp:
                torch.save({"modules": modules.state_dict(), "optimizer": optimizer.state_dict(),
                            "ema": ema.state_dict(), "rng": rng_state(), "step": done,
                        "text_encoder": text_encoder}, tmp)
            export_ema(prior, modules, ema, out_dir)
    metrics.close()
    return out_dir
