"""The run configuration's schema: the dataclasses OmegaConf checks types against, one per config section.

No defaults here (every field is MISSING): ``configs/base.yaml`` holds and documents them.
"""

from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

# A schedulable scalar: a number, or [start_step, start_value, end_value, end_step].
Schedulable = Any

# objective.name's choices; sds3d.objectives.OBJECTIVES maps each to its class (a test keeps the two equal).
OBJECTIVE_NAMES = ("sds", "sjc", "vsd", "csd", "nfsd", "ism", "bsd", "semantic")


@dataclass
class PerpNegConfig:
    enabled: bool = MISSING
    f_fs: List[float] = MISSING
    f_sf: List[float] = MISSING
    f_sb: List[float] = MISSING
    f_fsb: List[float] = MISSING


@dataclass
class PromptConfig:
    text: str = MISSING
    negative: str = MISSING
    view_dependent: bool = MISSING
    front_threshold: float = MISSING
    back_threshold: float = MISSING
    overhead_threshold: float = MISSING
    perp_neg: PerpNegConfig = field(default_factory=PerpNegConfig)


@dataclass
class GuideConfig:
    model: str = MISSING
    dtype: str = MISSING
    channels_last: bool = MISSING
    compile: bool = MISSING
    tiny_vae: str = MISSING
    cache_dir: str = MISSING


@dataclass
class SJCConfig:
    var_red: bool = MISSING


@dataclass
class CSDConfig:
    cond_scale: Schedulable = MISSING
    negative_scale: Schedulable = MISSING
    null_scale: Schedulable = MISSING
    noise_scale: Schedulable = MISSING


@dataclass
class NFSDConfig:
    switch: float = MISSING


@dataclass
class VSDConfig:
    lora_rank: int = MISSING
    lr: float = MISSING
    camera_dropout: float = MISSING


@dataclass
class ISMConfig:
    interval: Schedulable = MISSING
    inversion_stride: float = MISSING
    inversion_steps: int = MISSING
    inversion_start: float = MISSING
    offset_noise: float = MISSING


@dataclass
class BSDConfig:
    classifier_weight: float = MISSING


@dataclass
class SemanticConfig:
    base: str = MISSING
    global_weight: Schedulable = MISSING
    dilation: int = MISSING


@dataclass
class ObjectiveConfig:
    name: str = MISSING
    guidance_scale: Schedulable = MISSING
    weighting: str = MISSING
    t_schedule: str = MISSING
    t_unit: str = MISSING
    t_min: Schedulable = MISSING
    t_max: Schedulable = MISSING
    dreamtime: List[float] = MISSING
    colour_t_max: float = MISSING
    grad_clip: Schedulable = MISSING
    grad_normalize: bool = MISSING
    weight: Schedulable = MISSING
    sjc: SJCConfig = field(default_factory=SJCConfig)
    csd: CSDConfig = field(default_factory=CSDConfig)
    nfsd: NFSDConfig = field(default_factory=NFSDConfig)
    vsd: VSDConfig = field(default_factory=VSDConfig)
    ism: ISMConfig = field(default_factory=ISMConfig)
    bsd: BSDConfig = field(default_factory=BSDConfig)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)


@dataclass
class PlannerConfig:
    url: str = MISSING
    model: str = MISSING
    api_key_env: str = MISSING
    timeout: float = MISSING


@dataclass
class LayoutConfig:
    file: str = MISSING
    object_views: bool = MISSING
    planner: PlannerConfig = field(default_factory=PlannerConfig)


@dataclass
class HashGridConfig:
    levels: int = MISSING
    features_per_level: int = MISSING
    log2_table_size: int = MISSING
    base_resolution: int = MISSING
    max_resolution: int = MISSING
    start_level: int = MISSING
    start_step: int = MISSING
    update_steps: int = MISSING
    backend: str = MISSING


@dataclass
class OccupancyConfig:
    resolution: int = MISSING
    every: int = MISSING
    threshold: float = MISSING


@dataclass
class SceneConfig:
    radius: float = MISSING
    particles: int = MISSING
    encoding: HashGridConfig = field(default_factory=HashGridConfig)
    occupancy: OccupancyConfig = field(default_factory=OccupancyConfig)
    mlp_width: int = MISSING
    mlp_layers: int = MISSING
    density_bias: str = MISSING
    blob_scale: float = MISSING
    blob_std: float = MISSING
    normals: str = MISSING
    finite_difference_eps: float = MISSING


@dataclass
class BackgroundConfig:
    kind: str = MISSING
    color: List[float] = MISSING
    random_color_prob: float = MISSING
    mlp_width: int = MISSING
    frequencies: int = MISSING


@dataclass
class RenderConfig:
    width: int = MISSING
    height: int = MISSING
    samples: int = MISSING
    importance_samples: int = MISSING
    chunk: int = MISSING
    occupancy_grid: bool = MISSING
    latent_warmup_steps: int = MISSING
    ambient_only_steps: int = MISSING
    textureless_prob: float = MISSING
    diffuse_prob: float = MISSING
    light: str = MISSING
    headlight_lift: float = MISSING
    ambient: float = MISSING
    diffuse: float = MISSING
    background: BackgroundConfig = field(default_factory=BackgroundConfig)


@dataclass
class CameraConfig:
    batch_size: int = MISSING
    elevation_range: List[float] = MISSING
    azimuth_range: List[float] = MISSING
    distance_range: List[float] = MISSING
    fovy_range: List[float] = MISSING
    light_distance_range: List[float] = MISSING
    eval_distance: float = MISSING
    eval_fovy: float = MISSING
    eval_elevation: float = MISSING


@dataclass
class TrainConfig:
    steps: int = MISSING
    lr_encoding: Schedulable = MISSING
    lr_network: Schedulable = MISSING
    lr_background: float = MISSING
    betas: List[float] = MISSING
    eps: float = MISSING
    amp: bool = MISSING
    lambda_orient: Schedulable = MISSING
    lambda_sparsity: Schedulable = MISSING
    lambda_opaque: Schedulable = MISSING
    lambda_haze: Schedulable = MISSING
    log_every: int = MISSING
    val_every: int = MISSING
    val_views: int = MISSING
    val_resolution: int = MISSING
    ckpt_every: int = MISSING


@dataclass
class ExportConfig:
    formats: List[str] = MISSING
    resolution: int = MISSING
    threshold: Optional[float] = MISSING
    min_component_fraction: float = MISSING
    max_faces: int = MISSING
    texture: bool = MISSING
    texture_resolution: int = MISSING
    texture_padding: int = MISSING
    video_frames: int = MISSING
    video_fps: int = MISSING
    video_resolution: int = MISSING


@dataclass
class RefineConfig:
    enabled: bool = MISSING
    steps: int = MISSING
    width: int = MISSING
    height: int = MISSING
    rasterizer: str = MISSING
    mesh_resolution: int = MISSING
    lr_offsets: float = MISSING
    lr_texture: float = MISSING
    lambda_laplacian: Schedulable = MISSING
    lambda_normal_consistency: Schedulable = MISSING


@dataclass
class ImageConfig:
    steps: int = MISSING
    lr: float = MISSING
    space: str = MISSING
    frames: int = MISSING
    azimuth: float = MISSING


@dataclass
class RunConfig:
    prompt: PromptConfig = field(default_factory=PromptConfig)
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    seed: int = MISSING
    device: str = MISSING
    out_dir: str = MISSING
    guide: GuideConfig = field(default_factory=GuideConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    scene: SceneConfig = field(default_factory=SceneConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    cameras: CameraConfig = field(default_factory=CameraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
