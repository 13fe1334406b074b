"""VSD, Variational Score Distillation (ProlificDreamer, Wang et al. 2023).

g = w(t) (eps_hat_s(x_t; y, t) - eps_lora(x_t; y, t, c)): the frozen guide against a LoRA copy of its
own UNet that follows the distribution of the current renders. The LoRA (rank ``vsd.lora_rank`` on every
attention projection, through diffusers/peft) is camera-conditioned: the flattened camera-to-world
matrix goes through a TimestepEmbedding(16, time_embed_dim), output layer zero-initialised, added to the
UNet's time embedding; a guide
that is camera-conditioned itself (``view_aware``: the bundled prior) keeps its own camera embedding, and
the LoRA adapts around it. One UNet serves both: the adapters (and VSD's camera embedding) are switched
on only for the LoRA branch.
The LoRA trains online on detached renders with its own t' ~ U{0..T-1} and noise, the camera zeroed
with probability ``vsd.camera_dropout``, against the model's own target (eps, or v = alpha eps - sigma x),
at its own learning rate ``vsd.lr``. The LoRA sees the prompt without its view suffix (``no_view``) and no CFG.
"""

from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from sds3d.errors import ConfigError
from sds3d.objectives.base import Objective, ObjectiveOutput, add_noise, guided, predict

ADAPTER = "vsd"
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


class VSD(Objective):
    """Variational Score Distillation (ProlificDreamer): w(t) (eps_hat - eps_lora(camera))."""

    def __init__(self, config, guide, total_steps: int):
        super().__init__(config, guide, total_steps)
        from diffusers.models.embeddings import TimestepEmbedding
        from peft import LoraConfig

        unet = getattr(guide, "unet", None)
        if unet is None:
            raise ConfigError("objective 'vsd' trains a LoRA on the guide's UNet, and this guide has none",
                              hint="use a diffusers model as guide.model (the bundled prior, SD, IF)")
        if ADAPTER in getattr(unet, "peft_config", {}):
            unet.delete_adapters(ADAPTER)
        rank = config.vsd.lora_rank
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS),
                         adapter_name=ADAPTER)
        unet.disable_adapters()
        self.lora = nn.ParameterList([p for name, p in unet.named_parameters() if f".{ADAPTER}." in name])
        for p in self.lora:
            p.data = p.data.float()  # trained in fp32 even beside an fp16 UNet
            p.requires_grad_(True)
        self.camera_embedding = None
        if not guide.view_aware:
            # Output layer at zero: the LoRA model starts equal to the frozen guide instead of shifted by a
            # random camera term (on the prior about 70 % of the classifier direction before any training).
            self.camera_embedding = TimestepEmbedding(16, unet.time_embedding.linear_2.out_features).to(guide.device)
            nn.init.zeros_(self.camera_embedding.linear_2.weight)
            nn.init.zeros_(self.camera_embedding.linear_2.bias)
        self.lr = config.vsd.lr

    @contextmanager
    def lora_branch(self, unet):
        """The UNet as the LoRA model: adapters on, VSD's camera embedding (if any) as its class embedding."""
        unet.enable_adapters()
        own = unet.class_embedding
        if self.camera_embedding is not None:
            unet.class_embedding = self.camera_embedding
        try:
            yield
        finally:
            unet.class_embedding = own
            unet.disable_adapters()
            # peft's disable_adapters also sets requires_grad=False on the adapter weights, and autograd then
            # drops their gradients from the LoRA loss built inside this branch: the LoRA would never train.
            for p in self.lora:
                p.requires_grad_(True)

    def camera(self, guide, conditions) -> torch.Tensor:
        """The LoRA branch's class labels: the guide's camera features, or the flattened c2w for VSD's own embedding."""
        if self.camera_embedding is None:
            return guide.camera_labels(conditions.cameras, conditions.camera.shape[0])
        return conditions.camera

    def forward(self, guide, x: torch.Tensor, conditions, step: int) -> ObjectiveOutput:
        batch, x_clean = x.shape[0], x.detach()
        t = self.timesteps(batch, guide, step)
        x_t = add_noise(x_clean, torch.randn_like(x), t, guide.alphas_cumprod)
        eps = predict(guide, x_t, t, conditions, ("cond", "negative"))
        with torch.no_grad(), self.lora_branch(guide.unet):
            eps_lora = guide.to_eps(guide.unet_output(x_t, t, conditions.no_view, images=conditions.image,
                                                        class_labels=self.camera(guide, conditions)), x_t, t)
        grad = self.weight(guide, t, x, step) * (guided(eps, conditions, self.scale(step)) - eps_lora)
        result = self.output(x, grad, t, step)
        result.aux["lora"] = self.lora_loss(guide, x_clean, conditions)
        return result

    def lora_loss(self, guide, x_clean: torch.Tensor, conditions) -> torch.Tensor:
        """The LoRA's denoising loss on the detached renders (its own t' and noise; camera dropout)."""
        batch = x_clean.shape[0]
        t = torch.randint(0, guide.alphas_cumprod.shape[0], (batch,), device=x_clean.device)
        noise = torch.randn_like(x_clean)
        keep = (torch.rand(batch, device=x_clean.device) >= self.config.vsd.camera_dropout).float()
        with self.lora_branch(guide.unet):
            out = guide.unet_output(add_noise(x_clean, noise, t, guide.alphas_cumprod), t, conditions.no_view, images=conditions.image,
                                    class_labels=self.camera(guide, conditions) * keep[:, None])
        return F.mse_loss(out, lora_target(guide, x_clean, noise, t))


def lora_target(guide, x_clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The model's own training target: eps, or the velocity alpha_t eps - sigma_t x for v-prediction."""
    if guide.prediction_type != "v_prediction":
        return noise
    a = guide.alphas_cumprod[t].view(-1, *([1] * (x_clean.dim() - 1)))
    return a.sqrt() * noise - (1.0 - a).sqrt() * x_clean
