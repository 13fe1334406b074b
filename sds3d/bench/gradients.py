"""`sds3d bench gradients`: how hard each method pushes, and which way, at the ground truth.

The world scene of a caption is rendered lit from training cameras (the prior's own training images)
and handed to each method's objective as if the NeRF had drawn it; the objective's gradient with
respect to the render's pixels is then measured:
- its per-pixel norm (over RGB, times the method's ``objective.weight``), on the object and on the
  background: the scale against which the regularisers' weights (``train.lambda_*``) act;
- the opacity gradient it implies, dL/do = g . (colour - background) per pixel (a render composites
  o * colour + (1 - o) * background), on the object, on a ring of pixels just outside it (2 px) and on the
  far background (beyond 4 px). Negative means the objective asks for more opacity there: a negative ring grows the
  asset, a negative far background asks for haze;
- the colour it asks of the object, -g averaged over the object's pixels per channel (R, G, B) of the renders
  whose noise level passes the colour gate (``objective.colour_t_max``: the only ones that teach the albedo
  in training): positive asks for more of that channel, all three negative for a darker object; and its part
  along the object's own colour (``brighter``: positive asks for a brighter object, negative for a darker one).
With ``albedo_gain`` the object's albedo is scaled before the objective sees it: a method whose ``brighter``
turns from positive below gain 1 to negative above it holds the true colour; one that asks the same way at
every gain has no colour of its own to settle on and drifts until something else stops it.
A perfect guide at its own data asks for nothing; the figures say how far each method is from that, and
``weight for SDS's scale`` is the objective weight that gives the method SDS's per-pixel norm.
"""

from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F

from sds3d.bench.quality import METHODS
from sds3d.cameras import sample_cameras
from sds3d.config import load_config, schedule
from sds3d.render.colour_gate import colour_passes
from sds3d.train import build_session
from sds3d.world.render import render_scenes
from sds3d.world.scenes import BACKGROUND, parse_caption

SINGLE_OBJECT_METHODS = tuple(m for m in METHODS if m != "semantic")  # semantic needs a region map


def ring(mask: torch.Tensor, width: int) -> torch.Tensor:
    """[B, H, W] bool: pixels within ``width`` of the mask but outside it."""
    grown = F.max_pool2d(mask[:, None].float(), 2 * width + 1, stride=1, padding=width)[:, 0] > 0.5
    return grown & ~mask


def with_albedo_gain(rgb: torch.Tensor, coverage: torch.Tensor, gain: float) -> torch.Tensor:
    """Lit renders [B, H, W, 3] whose object albedo is scaled by ``gain``: under white light the lit colour
    scales with the albedo (up to white), and an edge pixel's background share (1 - coverage) stays as it is."""
    background = (1.0 - coverage[..., None]) * torch.tensor(BACKGROUND)
    return (background + gain * (rgb - background)).clamp(0.0, 1.0)


def measure(method: str, prompt: str, overrides: Sequence[str], draws: int, albedo_gain: float = 1.0) -> Dict:
    """The method's gradient figures at ``prompt``'s ground truth (its albedo scaled by ``albedo_gain``),
    averaged over ``draws`` steps spread evenly over the run (annealed schedules are seen at each stage).
    Each method loads its own guide: VSD adds its LoRA to the guide's UNet."""
    cfg = load_config(method, overrides, prompt)
    session = build_session(cfg)
    scene, total = parse_caption(prompt), cfg.train.steps
    sums = {k: [] for k in ("norm_object", "norm_background", "opacity_object", "opacity_ring", "opacity_far")}
    colour, brighter = [], []
    background = torch.tensor(BACKGROUND)
    for k in range(draws):
        step = k * total // draws
        torch.manual_seed(cfg.seed + k)
        cameras = sample_cameras(cfg.cameras, cfg.render.width, cfg.render.height)
        truth = render_scenes([scene] * len(cameras), cameras)
        lit = with_albedo_gain(truth.rgb, truth.mask, albedo_gain)
        rgb = lit.to(session.device).requires_grad_(True)
        x = session.guide.encode(rgb.permute(0, 3, 1, 2))
        result = session.objective(session.guide, x, session.prompts.conditions(cameras.to(session.device), None), step)
        (schedule(cfg.objective.weight, step, total) * result.loss * len(cameras)).backward()
        grad = rgb.grad.detach().cpu()  # [B, H, W, 3]: g per pixel (the loss is g / B)
        mask = truth.mask > 0.5
        near, far = ring(mask, 2), ~ring(mask, 4) & ~mask
        opacity_grad = (grad * (lit - background)).sum(-1)
        # The far background's colour is the background itself, so its opacity gradient is taken against
        # a haze of the object's mean colour: what the objective says about a little of the object there.
        haze = (grad * (lit[mask].mean(0) - background)).sum(-1)
        norm = grad.norm(dim=-1)
        for key, values, region in (("norm_object", norm, mask), ("norm_background", norm, ~mask), ("opacity_object", opacity_grad, mask),
                                    ("opacity_ring", haze, near), ("opacity_far", haze, far)):
            if region.any():  # a small render may have no far background
                sums[key].append(values[region].mean().item())
        teaches = mask
        if cfg.objective.colour_t_max < 1.0:  # as in training: only then is the gate read
            passes = colour_passes(result.t, cfg.objective.colour_t_max, len(session.guide.alphas_cumprod))
            teaches = mask & passes.bool().cpu()[:, None, None]
        if teaches.any():
            colour.append(-grad[teaches].mean(0))
            brighter.append(colour[-1] @ F.normalize(lit[teaches].mean(0), dim=0))
    return {"method": method, "objective": cfg.objective.name, "weight": schedule(cfg.objective.weight, 0, total),
            "albedo_gain": albedo_gain,
            **{k: sum(v) / len(v) if v else float("nan") for k, v in sums.items()},
            "colour_object": torch.stack(colour).mean(0).tolist() if colour else [float("nan")] * 3,
            "brighter": torch.stack(brighter).mean().item() if brighter else float("nan")}


def run_gradients(methods: Sequence[str], prompt: str, overrides: Sequence[str], draws: int = 8,
                  albedo_gains: Sequence[float] = (1.0,)) -> List[Dict]:
    rows = [measure(method, prompt, overrides, draws, gain) for method in methods for gain in albedo_gains]
    for row in rows:
        sds = next((r for r in rows if r["objective"] == "sds" and r["albedo_gain"] == row["albedo_gain"]), None)
        measurable = sds and min(sds["norm_object"], row["norm_object"]) > 1e-6  # an exact guide at its data: none
        row["weight_for_sds_scale"] = row["weight"] * sds["norm_object"] / row["norm_object"] if measurable else None
    return rows


def format_gradients(rows: List[Dict], prompt: str) -> str:
    lines = [f"gradients at the ground truth of '{prompt}' (per pixel; opacity: negative asks for more; colour: positive asks for more)",
             f"{'method':<16} {'albedo':>6} {'weight':>6} {'norm obj':>8} {'norm bg':>8} {'dL/do obj':>9} {'ring':>8} {'far bg':>8} "
             f"{'colour asked R G B':>21} {'brighter':>8} {'weight for SDS scale':>20}"]
    for r in rows:
        suggested = f"{r['weight_for_sds_scale']:.3g}" if r["weight_for_sds_scale"] is not None else "-"
        colour = " ".join(f"{c:+.3f}" for c in r["colour_object"])
        lines.append(f"{r['method']:<16} {r['albedo_gain']:>6.3g} {r['weight']:>6.3g} {r['norm_object']:>8.3f} "
                     f"{r['norm_background']:>8.3f} {r['opacity_object']:>9.3f} {r['opacity_ring']:>8.3f} {r['opacity_far']:>8.3f} "
                     f"{colour:>21} {r['brighter']:>+8.3f} {suggested:>20}")
    return "\n".join(lines)
