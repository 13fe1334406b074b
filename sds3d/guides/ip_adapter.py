"""Visual prompts: an IP-Adapter (Ye et al. 2023) on a Stable Diffusion guide, the way TV-3DG shows its guide a
reference image. diffusers' own loader (``load_ip_adapter``) adds the adapter's decoupled cross-attention to the
UNet and loads its CLIP image encoder; each row of a UNet call then sees the image through the image embedding it
is given, or no image through a zero embedding (diffusers' unconditional image embedding)."""

from pathlib import Path
from typing import Optional

import torch

from sds3d.errors import ModelLoadError
from sds3d.files import read_image
from sds3d.guides.base import locate_model


class ImageAdapter:
    """The adapter's image encoder and preprocessing; the UNet it was loaded into carries the rest."""

    def __init__(self, image_encoder, feature_extractor, device: torch.device, dtype: torch.dtype):
        self.image_encoder, self.feature_extractor = image_encoder.requires_grad_(False).eval(), feature_extractor
        self.device, self.dtype = device, dtype
        self.dim = image_encoder.config.projection_dim

    @classmethod
    def load(cls, unet, scheduler, source: str, subfolder: str, weight_name: str, scale: float,
             device: torch.device, dtype: torch.dtype) -> "ImageAdapter":
        """Loads the adapter ``<source>/<subfolder>/<weight_name>`` (hub id or folder) into ``unet`` at ``scale``."""
        from diffusers import StableDiffusionPipeline

        # The loader is a pipeline method: a pipeline around the UNet alone is enough for it.
        pipeline = StableDiffusionPipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
                                           safety_checker=None, feature_extractor=None, image_encoder=None,
                                           requires_safety_checker=False)
        source = locate_model(source)
        try:
            pipeline.load_ip_adapter(source, subfolder=subfolder, weight_name=weight_name)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:  # missing files, foreign weights, wrong shapes
            where = f"folder '{source}'" if Path(source).is_dir() else f"hub id '{source}'"
            raise ModelLoadError(f"cannot load the IP-Adapter {subfolder}/{weight_name} from {where}: {str(exc).splitlines()[0]}",
                                 hint="guide.ip_adapter, guide.ip_adapter_subfolder and guide.ip_adapter_weight name the "
                                      "adapter; its image encoder belongs in <subfolder>/image_encoder, and its "
                                      "cross-attention must match guide.model (SD 1.5 adapters for SD 1.5)") from exc
        pipeline.set_ip_adapter_scale(scale)
        return cls(pipeline.image_encoder.to(device), pipeline.feature_extractor, device, dtype)

    def embed(self, path: str) -> torch.Tensor:
        """The reference image at ``path`` as the adapter's image embedding [D] (float32, on the device)."""
        pixels = self.feature_extractor(images=read_image(path, "prompt.image"), return_tensors="pt").pixel_values
        with torch.no_grad():
            return self.image_encoder(pixels.to(self.device, self.dtype)).image_embeds[0].float()

    def unet_inputs(self, images: Optional[torch.Tensor], rows: int) -> dict:
        """The UNet's ``added_cond_kwargs`` for ``rows`` rows: ``images`` [rows, D] (a zero row sees no image), or no
        image in any row."""
        if images is None:
            images = torch.zeros(rows, self.dim, device=self.device)
        return {"image_embeds": [images[:, None].to(self.device, self.dtype)]}
