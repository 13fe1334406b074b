"""The run configuration, one documented field per key: its type, default, meaning and valid range.

This is the one source. OmegaConf checks types against these dataclasses (``Literal`` fields reject values outside
their choices), ``config.validate`` checks the ranges given here, ``configs/base.yaml`` is generated from it
(``python -m sds3d.config_docs``; a test fails when the file drifts) and ``sds3d keys`` lists it.
"""

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Iterator, List, Literal, Optional, Tuple, get_args


class Schedule:
    """A schedulable scalar: a number, or ``[start_step, start_value, end_value, end_step]``, linear between the steps
    and clamped outside; when end_step is a float in (0, 1], both steps are fractions of the run."""


# OmegaConf cannot check a number-or-list union, so it holds Any and config.check_schedule checks the shape.
Schedulable = Annotated[Any, Schedule]

# objective.name's choices; sds3d.objectives.OBJECTIVES maps each to its class (a test keeps the two equal).
ObjectiveName = Literal["sds", "sjc", "vsd", "csd", "nfsd", "ism", "bsd", "csm", "semantic"]
OBJECTIVE_NAMES = get_args(ObjectiveName)
# The objectives whose gradient is affine in eps(y), so a layout region can mix them (objectives/semantic.py's BASES).
SemanticBase = Literal["sds", "sjc", "csd", "nfsd"]
Rasterizer = Literal["torch", "nvdiffrast"]

MISSING_VALUE = "???"  # OmegaConf's marker of a key without a value


def key(default: Any, doc: str, *, low: Optional[float] = None, high: Optional[float] = None,
        positive: bool = False, length: Optional[int] = None, ordered_pair: bool = False) -> Any:
    """A config key: its default and meaning, and what validation enforces on its value (``low`` and ``high`` are
    inclusive bounds; ``positive`` means above 0; ``length`` is a list's size; ``ordered_pair`` a [low, high] range)."""
    meta = {"doc": doc, "low": low, "high": high, "positive": positive,
            "length": 2 if ordered_pair else length, "ordered_pair": ordered_pair}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(schema: type, doc: str = "") -> Any:
    return field(default_factory=schema, metadata={"doc": doc})


@dataclass
class PerpNegConfig:
    enabled: bool = key(False, "Perp-Neg: the view prompt interpolated by azimuth, the other views as negatives "
                               "projected perpendicular to it (needs prompt.view_dependent)")
    f_fs: List[float] = key([4.0, 0.5, -2.426], "negative weight f(r) = a*exp(-b*r) + c, [a, b, c], of the front "
                                                "view seen from a side view (threestudio's defaults)", length=3)
    f_sf: List[float] = key([4.0, 0.5, -2.426], "the same for the side view seen from the front", length=3)
    f_sb: List[float] = key([1.0, 0.5, -0.606], "the same for the side view seen from the back", length=3)
    f_fsb: List[float] = key([1.0, 0.5, 0.967], "the same for the front view seen from the back", length=3)


@dataclass
class PromptConfig:
    text: str = key(MISSING_VALUE, "the text prompt; given as the first argument of `sds3d run`")
    negative: str = key("", "negative prompt; replaces the empty prompt in classifier-free guidance")
    image: str = key("", "a reference image (visual prompt, TV-3DG) the guide also sees through guide.ip_adapter, on "
                         "the prompt's side of classifier-free guidance; \"\" for none")
    view_dependent: bool = key(True, 'append ", front view" / ", side view" / ", back view" / ", overhead view"')
    front_threshold: float = key(45.0, "|azimuth| below this (degrees) is a front view")
    back_threshold: float = key(45.0, "|azimuth| above 180 minus this is a back view")
    overhead_threshold: float = key(60.0, "elevation above this is an overhead view, whatever the azimuth")
    perp_neg: PerpNegConfig = section(PerpNegConfig)


@dataclass
class GuideConfig:
    model: str = key("${asset:prior}", "diffusers hub id or local folder: SD 1.x/2.x, DeepFloyd IF stage I, or the "
                                       "bundled prior (assets/prior, 32 px, knows the benchmark world's words; "
                                       "`exact:world` is the exact world denoiser)")
    dtype: Literal["auto", "fp16", "fp32"] = key("auto", "auto (fp16 on cuda, fp32 on cpu) | fp16 | fp32")
    channels_last: bool = key(True, "channels_last UNet memory format on cuda (attention runs on torch's SDPA "
                                    "either way)")
    compile: bool = key(False, "torch.compile the UNet (slow first steps while it compiles, then faster ones)")
    tiny_vae: str = key("", "latent models: a tiny VAE (diffusers AutoencoderTiny) replacing the VAE, hub id or "
                            'folder, e.g. madebyollin/taesd (SD 1.x/2.x); "" keeps the model\'s own VAE')
    ip_adapter: str = key("", "IP-Adapter for prompt.image (Stable Diffusion guides): hub id or folder, e.g. "
                              "h94/IP-Adapter with an SD 1.5 guide.model; \"\" for none")
    ip_adapter_subfolder: str = key("models", "where the adapter's weights lie in guide.ip_adapter; its CLIP image "
                                              "encoder is read from <subfolder>/image_encoder")
    ip_adapter_weight: str = key("ip-adapter_sd15.safetensors", "the adapter's weight file (.safetensors or .bin)")
    ip_adapter_scale: float = key(1.0, "strength of the image prompt's cross-attention (diffusers' "
                                       "set_ip_adapter_scale; 0.5 leaves the text more say)", low=0.0)
    cache_dir: str = key("${oc.env:SDS3D_CACHE,'~/.cache/sds3d'}", "text-embedding cache, keyed by model and prompt")


@dataclass
class SJCConfig:
    var_red: bool = key(True, "subtract the injected noise (PAAS); false uses -eps_hat alone")


@dataclass
class CSDConfig:
    cond_scale: Schedulable = key(1.0, "cond: the prompt's eps(y)")
    negative_scale: Schedulable = key(0.0, 'negative: eps(y_neg), from prompt.negative ("" gives eps(""))')
    null_scale: Schedulable = key(-1.0, 'null: the empty prompt\'s eps("")')
    noise_scale: Schedulable = key(0.0, "noise: the injected noise eps")


@dataclass
class NFSDConfig:
    switch: float = key(0.2, 'below switch*T the domain term is eps(""); above, eps("") - eps(prompt.negative)',
                        low=0.0, high=1.0)


@dataclass
class VSDConfig:
    lora_rank: int = key(4, "LoRA rank on every attention projection of the guide's UNet", positive=True)
    lr: float = key(1.0e-4, "learning rate of the LoRA and its camera embedding")
    camera_dropout: float = key(0.1, "chance of training the LoRA with the camera condition zeroed", low=0.0, high=1.0)


@dataclass
class ISMConfig:
    interval: Schedulable = key(0.08, "t - s, the interval between x_s and x_t, as a fraction of T")
    inversion_stride: float = key(0.2, "DDIM inversion jumps from x_0 to x_s, as a fraction of T", positive=True)
    inversion_steps: int = key(5, "at most this many jumps (the first starts from x_0 noised to the remainder)",
                               positive=True)
    inversion_start: float = key(0.02, "the lowest level the inversion starts from, as a fraction of T (the "
                                       "authors' min step)", low=0.0, high=1.0)
    offset_noise: float = key(0.1, "the starting noise gets this times a normal draw per channel, shared by the "
                                   "batch", low=0.0)


@dataclass
class BSDConfig:
    classifier_weight: float = key(15.0, 'c = weight * (eps(y) - eps("")); PlacidDreamer hard-codes 15')


@dataclass
class SemanticConfig:
    base: SemanticBase = key("sds", "the per-region objective (one whose gradient is affine in eps(y))")
    global_weight: Schedulable = key(0.5, "weight of the global prompt's gradient on the whole image")
    dilation: int = key(5, "max-pool window that grows each region's mask into background pixels (odd)")


@dataclass
class ObjectiveConfig:
    name: ObjectiveName = key("sds", "score-distillation objective; `sds3d configs` lists the shipped recipes")
    guidance_scale: Schedulable = key([0.5, 7.5, 2.0, 1.0], "standard CFG scale: eps_u + s*(eps_c - eps_u). On the bundled "
                                      "prior 7.5 beats 20 (red cube IoU 0.85 vs 0.74), whose renders saturate and swell; "
                                      "at 7.5 its cubes still come out too large with a too dark shaded face, so the scale "
                                      "falls to 2 over the run's second half, once the shape is made (red cube GLB IoU / "
                                      "colour error 0.84 / 0.074 -> 0.92 / 0.043, seed 0)")
    weighting: Literal["sds", "uniform", "fantasia3d", "alpha", "sigma_over_alpha"] = key(
        "sds", "w(t): sds (1 - alphabar) | uniform | fantasia3d (alpha * sigma^2) | alpha (sqrt alphabar, BSD) "
               "| sigma_over_alpha (ISM)")
    uniform_mix: Schedulable = key([0, 0.0, 1.0, 1.0], "m: w(t) blended towards uniform, (1 - m) w(t) + m; 0 keeps "
                                   "w(t). On the bundled prior SDS's w(t) rounds the cubes and uniform thins the cones; "
                                   "handing one over to the other through the run squares the cubes (red cube GLB IoU "
                                   "0.85 -> 0.895, yellow cube 0.90) and keeps the cones", low=0.0, high=1.0)
    t_schedule: Literal["random", "sqrt_anneal", "dreamtime"] = key(
        "random", "random: t ~ U[t_min, t_max] per view | sqrt_anneal: HiFA's deterministic t_max -> t_min along "
                  "sqrt(step/steps), for long runs (in 400 steps on the bundled prior its last, low-noise steps leave "
                  "sparsity to erase the NeRF) | dreamtime: DreamTime's prior-weighted descent")
    t_unit: Literal["fraction", "alphabar"] = key(
        "fraction", "what t_min and t_max are: fraction (of the model's T) | alphabar (the noise level alphabar_t, "
                    "so the bound means the same noise on any schedule: t_min 0.999, t_max 0.05; the bound is the "
                    "first t whose alphabar is at or below the value)")
    t_min: Schedulable = key(0.02, "lowest timestep, in t_unit")
    t_max: Schedulable = key(0.98, "highest timestep, in t_unit ([0.5, 0.98, 0.5, 0.5025] is the ProlificDreamer/CSD "
                                   "drop to 0.5 at half the run)")
    dreamtime: List[float] = key([0.8, 0.5, 0.3, 0.1], "DreamTime prior [m1, m2, s1, s2] as fractions of T", length=4)
    colour_t_max: float = key(0.6, "renders noised above this fraction of T teach shape only: their gradient skips "
                                   "the albedo (on the prior high t asks for paler colours even at the truth); 1.0 "
                                   "turns it off", low=0.0, high=1.0)
    grad_clip: Schedulable = key(0.0, "clamp the per-pixel gradient to +-value (D-SDS: [0, 2, 8, 10000] on SD); 0 "
                                      "disables")
    grad_normalize: bool = key(False, "divide the gradient by its L2 norm over the batch (CSD's stage 1)")
    weight: Schedulable = key(1.0, "weight of the objective's loss")
    sjc: SJCConfig = section(SJCConfig)
    csd: CSDConfig = section(CSDConfig, 'g = w(t) [cond*eps(y) + negative*eps(y_neg) + null*eps("") + noise*eps]')
    nfsd: NFSDConfig = section(NFSDConfig)
    vsd: VSDConfig = section(VSDConfig)
    ism: ISMConfig = section(ISMConfig, "ISM's interval and DDIM-inverted noising; CSM noises the same way")
    bsd: BSDConfig = section(BSDConfig)
    semantic: SemanticConfig = section(SemanticConfig, "region-wise distillation over a layout (objective semantic, "
                                                       "configs/semantic.yaml)")


@dataclass
class PlannerConfig:
    url: str = key("", 'OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 ("" = off)')
    model: str = key("", "model name sent with each request")
    api_key_env: str = key("OPENAI_API_KEY", "environment variable holding the API key (sent only when set)")
    timeout: float = key(60.0, "seconds to wait for the answer")


@dataclass
class LayoutConfig:
    file: str = key("", "a layout YAML/JSON (see assets/layouts/); its prompt is the run's prompt unless one is given")
    object_views: bool = key(True, "each region's view suffix from its own object's frame (else the camera's)")
    separate_objects: bool = key(False, "each object a field of its own, as CompoNeRF's and Set-the-Scene's per-object "
                                        "NeRFs: density only inside the objects' boxes, and each point's region code an "
                                        "input of the field's network, so objects neither spill into each other nor share "
                                        "their colours")
    zoom_prob: Schedulable = key(0.0, "chance that a step renders one region (an object, or a part of one) alone, "
                                      "framed as a single object, guided by its own prompt (layout/zoom.py)",
                                 low=0.0, high=1.0)
    zoom_frame: float = key(1.2, "side of the box that the training cameras frame as one object: a zoomed view "
                                 "moves them by the region box's largest side over this", positive=True)
    planner: PlannerConfig = section(PlannerConfig, 'optional: a chat model turns the prompt into a layout (used '
                                                    'when file is "")')


@dataclass
class HashGridConfig:
    levels: int = key(8, "resolution levels")
    features_per_level: int = key(2, "features stored per level")
    log2_table_size: int = key(15, "log2 of each level's hash table size")
    base_resolution: int = key(8, "grid cells per side of the coarsest level")
    max_resolution: int = key(128, "grid cells per side of the finest level")
    start_level: int = key(4, "progressive unlocking: levels active before start_step")
    start_step: int = key(100, "first step that unlocks another level")
    update_steps: int = key(50, "steps between unlocks")
    backend: Literal["auto", "cuda", "torch", "tcnn"] = key(
        "auto", "auto (cuda on a GPU, else torch) | cuda (cuda/, built on first use) | torch | tcnn")


@dataclass
class OccupancyConfig:
    resolution: int = key(32, "cells per side (0: off, every sample queried)", low=0)
    every: int = key(16, "steps between rebuilds of the grid from the field", positive=True)
    threshold: float = key(0.03, "density below which a cell counts as empty (a step of 2/48 through it: opacity "
                                 "0.1 %)")


@dataclass
class SceneConfig:
    radius: float = key(1.0, "the scene lives in the cube [-radius, radius]^3")
    particles: int = key(1, "independent scenes trained together, one drawn at random each step (ProlificDreamer's "
                            "n_particles: with VSD they share the LoRA, which learns their distribution); particle 0 "
                            "is the run's mesh.glb, validation and video, particle i is written to particle-<i>/",
                         positive=True)
    encoding: HashGridConfig = section(HashGridConfig, "multiresolution hash grid (tcnn conventions; see "
                                                       "sds3d/scene/hashgrid.py)")
    occupancy: OccupancyConfig = section(OccupancyConfig, "empty-space skipping in the torch renderer (any device): "
                                                          "samples in cells whose density stays under threshold are "
                                                          "not queried")
    mlp_width: int = key(32, "hidden width of the density/albedo MLP")
    mlp_layers: int = key(1, "hidden layers of that MLP")
    density_bias: Literal["blob", "none"] = key("blob", "blob (Magic3D density blob at the origin) | none")
    blob_scale: float = key(10.0, "blob peak density before the softplus")
    blob_std: float = key(0.5, "blob radius")
    normals: Literal["analytic", "finite_difference", "forward_difference"] = key(
        "forward_difference", "analytic (autograd of density) | finite_difference (central, 6 queries per normal) "
                              "| forward_difference (3 queries, reusing the sample's own density; as good on the "
                              "bench, 30 % faster steps)")
    finite_difference_eps: float = key(0.01, "step for finite-difference normals")


@dataclass
class BackgroundConfig:
    kind: Literal["solid", "environment"] = key("solid", "environment (small learned MLP of view direction) | solid")
    color: List[float] = key([1.0, 1.0, 1.0], "solid colour, also the validation background for `solid`")
    random_color_prob: float = key(0.0, "chance of a random solid background in training (stops a learned bg from "
                                        "copying the object)")
    mlp_width: int = key(16, "hidden width of the environment MLP")
    frequencies: int = key(4, "sin/cos frequencies of the view direction")


@dataclass
class RenderConfig:
    width: int = key(32, "training render width, resized to the guide's when it differs (the bundled prior's: 32)",
                     positive=True)
    height: int = key(32, "training render height", positive=True)
    samples: int = key(32, "stratified samples per ray", positive=True)
    importance_samples: int = key(16, "extra samples drawn from the coarse weights")
    chunk: int = key(65536, "rays per chunk when rendering large images")
    occupancy_grid: bool = key(False, "cuda: sample with nerfacc's occupancy grid (pip install 'sds3d[cuda]'), "
                                      "updated as the field trains, instead of the dense sampler above (which cpu "
                                      "always uses)")
    latent_warmup_steps: int = key(0, "latent models: for this many steps render 4 latent channels (a learned linear "
                                      "map of the render) straight into the guide, skipping the VAE (Latent-NeRF's "
                                      "warm-up)", low=0)
    ambient_only_steps: int = key(0, "albedo only before this step")
    textureless_prob: float = key(0.0, "after that: chance of a white-albedo (geometry) render when lit")
    diffuse_prob: float = key(1.0, "chance of a lit render (else albedo); normals are queried only where a sample "
                                   "shows")
    light: Literal["point", "headlight"] = key(
        "headlight", "headlight: from the camera, lifted by headlight_lift towards +z (the bundled prior's world "
                     "renders) | point: a point light at the camera's light_position (DreamFusion)")
    headlight_lift: float = key(0.6, "how far the headlight is lifted towards +z")
    deferred_shading: bool = key(False, "light each pixel once, from its composited normal and albedo, as a surface is "
                                        "lit (else each sample from its own normal: a soft shell then renders darker "
                                        "than its surface and the albedo learns to make up for it)")
    ambient: float = key(0.35, "ambient light (the prior's world: 0.35)")
    diffuse: float = key(0.65, "light strength (the prior's world: 0.65)")
    background: BackgroundConfig = section(BackgroundConfig)


@dataclass
class CameraConfig:
    batch_size: int = key(1, "views per step", positive=True)
    elevation_range: List[float] = key([-10.0, 45.0], "degrees", ordered_pair=True)
    azimuth_range: List[float] = key([-180.0, 180.0], "degrees; 0 is the front", ordered_pair=True)
    distance_range: List[float] = key([1.5, 2.0], "camera distance from the origin, scene units", ordered_pair=True)
    fovy_range: List[float] = key([40.0, 70.0], "vertical field of view, degrees", ordered_pair=True)
    light_distance_range: List[float] = key([0.8, 1.5], "point light, as a multiple of the camera distance")
    eval_distance: float = key(1.75, "validation, video and export views: camera distance")
    eval_fovy: float = key(55.0, "their vertical field of view, degrees")
    eval_elevation: float = key(15.0, "their elevation, degrees")


@dataclass
class PicardConfig:
    window: int = key(0, "DreamPropeller: P steps computed in parallel at guessed parameters, then replayed by the "
                         "optimiser (Picard iteration); 0 off, 1 the ordinary loop with the steps' draws keyed by step",
                      low=0)
    threshold: float = key(30.0, "a window's steps are kept up to the first whose fixed-point error 1e6 * ||theta' - "
                                 "theta_guess||^2 / numel exceeds it (0: exactly the sequential run)", low=0.0)
    adapt: float = key(0.1, "threshold <- (1 - adapt) threshold + adapt * median of the window's errors (the "
                            "authors' 0.1; 0 keeps it fixed)", low=0.0, high=1.0)
    devices: List[str] = key([], "the workers' devices, dealt round-robin (e.g. [cuda:0, cuda:1]); [] puts every "
                                 "worker on the run's device (several processes share one GPU, or the CPU's cores)")


@dataclass
class TrainConfig:
    steps: int = key(400, "optimisation steps", positive=True)
    lr_encoding: Schedulable = key(0.01, "Adam learning rate of the hash grid")
    lr_network: Schedulable = key(0.01, "of the density/albedo MLP")
    lr_background: float = key(0.001, "of the background")
    betas: List[float] = key([0.9, 0.99], "Adam betas")
    eps: float = key(1.0e-15, "Adam eps")
    amp: bool = key(True, "loss scaling for the fp16 guide's backward on cuda (renders stay fp32; ignored on cpu)")
    lambda_orient: Schedulable = key(0.0, "orientation loss (normals facing the camera; needs normals)")
    lambda_sparsity: Schedulable = key(50.0, "penalises total opacity (a mean over pixels, against the objective's "
                                             "sum: at 1 it barely acts on a 32 px render; 50 trims the prior's haze)")
    lambda_opaque: Schedulable = key(0.0, "pushes opacity to 0 or 1")
    lambda_haze: Schedulable = key(0.0, "mean sqrt(opacity + 0.01): steepest at opacity 0 (10x its slope at 1), so "
                                        "it erases faint haze that sparsity's sqrt(opacity^2 + 0.01), flat at 0, "
                                        "leaves alone")
    log_every: int = key(10, "metrics.jsonl line every N steps")
    val_every: int = key(100, "a validation grid, progress/step-<step>.png, every N steps (0: only at the end)")
    val_views: int = key(4, "views in a validation grid")
    val_resolution: int = key(64, "validation grid render size")
    ckpt_every: int = key(100, "ckpt/last.pt every N steps and at the end")
    picard: PicardConfig = section(PicardConfig, "DreamPropeller's parallel sampling of the optimisation path")


@dataclass
class ExportConfig:
    formats: List[Literal["glb", "obj", "ply"]] = key(["glb"], "any of glb, obj, ply, written as mesh.<format>")
    resolution: int = key(96, "marching-cubes grid per side", positive=True)
    threshold: Optional[float] = key(None, "density threshold; null: the level whose surface outlines renders of the grid")
    level_samples: int = key(192, "samples per ray of the grid renders the null threshold is set from (8 views, 48 px)",
                             positive=True)
    min_component_fraction: float = key(0.05, "drop pieces smaller than this fraction of the largest")
    max_faces: int = key(20000, "quadric-decimate meshes with more faces to this budget (0: keep all); UV unwrapping "
                                "time grows faster than the face count (xatlas on one core: ~1.5 s at 10k faces, "
                                "~5 s at 20k)", low=0)
    texture: bool = key(True, "bake the albedo into a UV texture: glb gets a PBR baseColorTexture, obj an MTL + PNG "
                              "(ply keeps vertex colours); false writes vertex colours everywhere")
    texture_resolution: int = key(1024, "texture width and height in pixels", low=8, high=8192)
    texture_padding: int = key(4, "pixels of gutter between UV charts, filled with each chart's edge colours", low=0)
    video_frames: int = key(24, "turntable video.mp4 frames (0: no video), rendered from the exported mesh")
    video_fps: int = key(12, "turntable frames per second")
    video_resolution: int = key(96, "turntable frame size")


@dataclass
class RefineConfig:
    enabled: bool = key(False, "run it right after the NeRF stage of `sds3d run` (configs/refine.yaml turns it on)")
    steps: int = key(200, "optimisation steps of the mesh stage (its train.steps)", positive=True)
    width: int = key(64, "its render width, above the NeRF stage's", positive=True)
    height: int = key(64, "its render height", positive=True)
    rasterizer: Rasterizer = key("torch", "torch (CPU and GPU) | nvdiffrast (CUDA, when installed)")
    mesh_resolution: int = key(128, "marching-cubes grid of the starting mesh", positive=True)
    lr_offsets: float = key(1.0e-4, "Adam learning rate of the vertex offsets (scene units)")
    lr_texture: float = key(0.003, "of the texture field's hash grid and MLP")
    lambda_laplacian: Schedulable = key(1000.0, "uniform Laplacian smoothing: mean |v - mean of its neighbours|^2")
    lambda_normal_consistency: Schedulable = key(1.0, "mean 1 - cos between the normals of adjacent faces")


@dataclass
class ImageConfig:
    steps: int = key(300, "optimisation steps of the image", positive=True)
    lr: float = key(0.03, "Adam learning rate of the image (or latent)")
    space: Literal["auto", "image", "latent"] = key(
        "auto", "auto | image | latent: optimise RGB logits (through the guide's encoder) or the guide's input "
                "directly (latent models: the VAE latent; pixel models: same as image)")
    frames: int = key(8, "progress frames in progress.png", positive=True)
    azimuth: float = key(0.0, "the view the prompt describes (its view suffix, and VSD's camera)")


@dataclass
class GanConfig:
    views: int = key(8, "guide samples per prompt, from cameras drawn as training's (drawn once, kept in "
                        "<run>/guide-samples.pt)", positive=True)
    sample_steps: int = key(20, "DDIM steps per guide sample", positive=True)
    lr: float = key(2.0e-4, "Adam learning rate of the discriminator")
    r1: float = key(10.0, "R1 penalty on the discriminator's gradient at the samples", low=0.0)
    shift: int = key(2, "DiffAugment translation: real and rendered images moved by up to this many pixels before the "
                        "discriminator sees them (0: off)", low=0)
    weight: float = key(1.0, "weight of the generator's adversarial loss")


@dataclass
class AmortizeConfig:
    prompts: List[str] = key([], "the prompts one generator learns (`sds3d amortize PROMPTS_FILE` fills it from the file)")
    mode: Literal["sds", "gan"] = key(
        "sds", "sds: the objective guides renders of the generator at each step's prompt (ATT3D) | gan: the guide's "
               "own samples per prompt and view train a text-conditioned discriminator that guides the renders (ET3D)")
    code_dim: int = key(32, "size of the prompt code the generator's network reads beside the hash grid", positive=True)
    val_prompts: int = key(4, "validation grid rows: N training prompts, evenly spaced through the list", positive=True)
    generator: str = key("", "set by `sds3d generate`: the generator folder whose field, at this run's prompt, "
                             "the run holds")
    gan: GanConfig = section(GanConfig, "mode gan: the guide's samples and the discriminator")


@dataclass
class RunConfig:
    prompt: PromptConfig = section(PromptConfig, "what to make")
    layout: LayoutConfig = section(LayoutConfig, "compositional scenes (objective semantic): objects in boxes, each "
                                                 "with its own prompt")
    seed: int = key(0, "seeds every random draw; same seed and config give the same run")
    device: Literal["auto", "cpu", "cuda"] = key("auto", "auto (cuda when available) | cpu | cuda")
    out_dir: str = key("outputs", "runs go to <out_dir>/<prompt-slug>-<yyyymmdd-hhmmss>/")
    guide: GuideConfig = section(GuideConfig, "the frozen 2D diffusion model")
    objective: ObjectiveConfig = section(ObjectiveConfig, "how the guide's judgement becomes a gradient")
    scene: SceneConfig = section(SceneConfig, "the NeRF: hash-grid field, MLP and density bias")
    render: RenderConfig = section(RenderConfig, "training renders: size, samples, shading")
    cameras: CameraConfig = section(CameraConfig, "where the training and evaluation cameras look from")
    train: TrainConfig = section(TrainConfig, "the optimisation loop: steps, learning rates, regularisers, logging")
    export: ExportConfig = section(ExportConfig, "the asset written at the end: mesh, texture, turntable")
    refine: RefineConfig = section(RefineConfig, "the mesh stage (Magic3D's second stage), `sds3d refine RUN_DIR` or "
                                                 "after the NeRF stage: the NeRF's marching-cubes mesh (decimated to "
                                                 "export.max_faces) gets learnable vertex offsets and a texture field "
                                                 "(a copy of the NeRF's albedo hash grid and MLP), drawn by the "
                                                 "differentiable rasterizer; the objective, cameras and train.* "
                                                 "logging keys apply as before")
    image: ImageConfig = section(ImageConfig, "`sds3d image PROMPT`: the 2D playground optimises one image with the "
                                              "objective")
    amortize: AmortizeConfig = section(AmortizeConfig, "`sds3d amortize`: one text-conditioned generator over a prompt "
                                                       "set, then `sds3d generate PROMPT` in one forward pass")


# Reading the schema: what validation, base.yaml and `sds3d keys` walk.


def fields(schema: type = RunConfig, prefix: str = "") -> Iterator[Tuple[str, dataclasses.Field, int]]:
    """Every field of the schema, depth first in declaration order: (dotted key, field, depth)."""
    for f in dataclasses.fields(schema):
        yield prefix + f.name, f, prefix.count(".")
        if dataclasses.is_dataclass(f.type):
            yield from fields(f.type, f"{prefix}{f.name}.")


def field_at(key: str) -> Optional[dataclasses.Field]:
    """The schema's field for a dotted key, or None when there is none."""
    return next((f for k, f, _ in fields() if k == key), None)


def is_schedule(f: dataclasses.Field) -> bool:
    return f.type is Schedulable


def choices(f: dataclasses.Field) -> Tuple[str, ...]:
    """A Literal field's values (a list of Literals: its items' values); () for any other field."""
    hint = f.type
    if typing.get_origin(hint) in (list, List):
        hint = typing.get_args(hint)[0]
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else ()


def describe(f: dataclasses.Field) -> str:
    """The field's documentation as base.yaml and `sds3d keys` show it."""
    doc = f.metadata.get("doc", "")
    return f"(schedule) {doc}" if is_schedule(f) else doc


def default(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default
