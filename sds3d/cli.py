"""`sds3d run | image | batch | amortize | generate | refine | export | configs | keys`: parses, calls the API, prints
errors as a message and a hint."""

import contextlib
import logging
import os
import re
import shlex
import signal
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import typer

from sds3d.config_docs import key_listing, sections
from sds3d.errors import Sds3dError
from sds3d.world.scenes import PAIR_PROB

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Text to 3D by score distillation: prompt in, GLB out.\n\n"
    'Example: sds3d run "a hamburger" train.steps=2000 seed=3. Any config key can be overridden as key.path=value: '
    "guide.model, train.steps, seed, objective.name, objective.guidance_scale, out_dir, ... (see `sds3d run --help`).",
)
state = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"sds3d {version('sds3d')}")
        raise typer.Exit()


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and debug logs."),
             _version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                           help="Print the version and exit.")):
    state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(message)s")


RUN_EPILOG = "Config sections (`sds3d keys SECTION` lists each key, its default and meaning): " + "; ".join(
    f"{name}: {re.split(r'[:;,]', doc)[0]}" for name, doc in sections() if doc) + "."


@app.command(context_settings={"allow_extra_args": False}, epilog=RUN_EPILOG)
def run(
    args: Optional[List[str]] = typer.Argument(None, metavar="[PROMPT] [KEY=VALUE]...", show_default=False),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="A YAML file or the name of a shipped config (`sds3d configs`)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run folder from its last checkpoint."),
    layout: Optional[str] = typer.Option(None, "--layout", "-l", help="A layout file (objects in boxes with their own prompts): "
                                         "semantic region SDS, with the layout's prompt unless PROMPT is given."),
):
    """Optimise a 3D scene for PROMPT and write outputs/<slug>-<time>/mesh.glb.

    Any config key can be overridden as key.path=value, for example:

      guide.model=stabilityai/stable-diffusion-2-1-base (hub id or local folder),
      train.steps=2000, seed=3, objective.name=sds, objective.guidance_scale=50,
      out_dir=my-runs, prompt.negative="blurry".

    `sds3d keys` lists every key (configs/base.yaml holds the same). With --resume, overrides such as train.steps=20000 extend the run.

    With --layout (e.g. assets/layouts/cube-left-of-sphere.yaml) the run uses configs/semantic.yaml unless
    --config is given; objective.semantic.base=csd (or nfsd, sjc) picks the per-region objective.
    """
    from sds3d import api

    prompt, overrides = split_args(args, "run")
    if resume is not None:
        if prompt is not None or config or layout:
            raise Sds3dError("--resume continues a run with its saved config",
                             hint="drop the prompt, --config and --layout; key=value overrides are allowed")
        result = api.resume(resume, overrides)
    else:
        result = api.generate(prompt, config, overrides, layout=layout)
    report(result, f"sds3d run --resume {result.run_dir}")


@app.command(context_settings={"allow_extra_args": False})
def image(
    args: Optional[List[str]] = typer.Argument(None, metavar="[PROMPT] [KEY=VALUE]...", show_default=False),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="A YAML file or the name of a shipped config (`sds3d configs`)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: <out_dir>/image-<slug>-<time>)."),
):
    """The 2D playground: optimise one image for PROMPT with the configured objective.

    Writes image.png (the result) and progress.png (image.frames snapshots over the run). Same config
    keys as `sds3d run`, plus image.steps, image.lr, image.space (auto | image | latent), image.frames and
    image.azimuth, for example:

      sds3d image "a red cube" --config csd image.steps=200 objective.guidance_scale=50
    """
    from sds3d.playground import optimise_image

    prompt, overrides = split_args(args, "image")
    result = optimise_image(prompt, config, overrides, out)
    typer.echo(f"wrote {result.image_path} and {result.progress_path}")
    typer.echo(f"{result.steps} steps, {result.seconds_per_step:.3f} s/step, folder {result.out_dir}")


def report(result, resume_command: str) -> None:
    """What a finished (or interrupted) run wrote; an interrupted one exits 130 with how to continue."""
    for path in result.outputs:
        typer.echo(f"wrote {path}")
    typer.echo(f"{result.steps} steps, {result.seconds_per_step:.3f} s/step, folder {result.run_dir}")
    if result.seconds:
        typer.echo("wall time: " + ", ".join(f"{name} {value:.1f} s" for name, value in result.seconds.items())
                   + f"; total {sum(result.seconds.values()):.1f} s")
    if result.interrupted:
        typer.echo(f"interrupted: continue with  {resume_command}")
        raise typer.Exit(130)


def split_args(args: Optional[List[str]], command: str):
    """PROMPT and KEY=VALUE arguments, in any order -> (the prompt or None, the overrides)."""
    from sds3d.config import is_override

    args = args or []
    prompts = [a for a in args if not is_override(a)]
    if len(prompts) > 1:
        raise Sds3dError(f"expected one prompt, got {len(prompts)}: {prompts}", hint=f'quote the prompt: sds3d {command} "a red cube"')
    return (prompts[0] if prompts else None), [a for a in args if is_override(a)]


@app.command(context_settings={"allow_extra_args": False})
def batch(
    prompts_file: Path = typer.Argument(..., help="A text file, one prompt a line (blank lines and # comments skipped), "
                                        "or a YAML/JSON list of entries."),
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", show_default=False),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="A YAML file or the name of a shipped config, for every job."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1, help="Jobs at once (default: one per GPU; 1 without a GPU)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Run on an existing Ray cluster (auto, HOST:6379, "
                                               "ray://HOST:10001): one GPU per job."),
    retries: int = typer.Option(2, "--retries", min=0, help="Further attempts for a job that fails, before it is marked failed."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The batch folder (default: <out_dir>/batch-<file name>)."),
):
    """Generate one asset per prompt in PROMPTS_FILE on Ray: local workers, or a cluster with --ray-address.

    Each job runs in <out>/<NNN>-<prompt-slug>/; <out>/index.json records each job's status, run folder,
    GLB, wall time, attempts and error. Running the same command again skips finished jobs and resumes
    interrupted ones from their checkpoints. A YAML/JSON entry is a prompt or a mapping:

      - prompt: a red cube
        seed: 3
        config: csd
        overrides: [train.steps=2000]

    Needs the ray extra: pip install -e ".[ray]".
    """
    from sds3d.batch.runner import batch_generate

    index = batch_generate(prompts_file, config, overrides or [], workers, ray_address, retries, out)
    counts = index.counts()
    typer.echo(f"{counts['done']} done, {counts['failed']} failed of {len(index.records)} jobs; index {index.path}")
    if counts["failed"]:
        raise typer.Exit(1)


@app.command(context_settings={"allow_extra_args": False})
def amortize(
    prompts_file: Optional[Path] = typer.Argument(None, help="A text file, one prompt a line, or a YAML/JSON list of prompts "
                                                  "(as `sds3d batch` reads it)."),
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", show_default=False),
    config: str = typer.Option("amortize", "--config", "-c", help="A YAML file or the name of a shipped config."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The generator's folder (default: <out_dir>/amortize-<file>-<time>)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this generator folder from its last checkpoint."),
):
    """Train one text-conditioned generator over the prompts of PROMPTS_FILE (amortized score distillation).

    Each step renders the generator at one of the prompts (every prompt once per block of as many steps) and applies
    the configured objective with that prompt. The folder gets config.yaml, ckpt/last.pt, metrics.jsonl,
    progress/step-XXXXX.png (a row of views per validation prompt) and, at the end, generator.pt. Then:

      sds3d generate "a blue cone" --generator OUT
    """
    from sds3d import api

    if resume is not None:
        if prompts_file is not None or out is not None:
            raise Sds3dError("--resume continues a generator with its saved config and prompts",
                             hint="drop PROMPTS_FILE and --out; key=value overrides such as train.steps are allowed")
        result = api.amortize(config=None, overrides=overrides or [], run_dir=resume, resume=True)
    elif prompts_file is None:
        raise Sds3dError("no prompts file given", hint="sds3d amortize prompts.txt  (one prompt a line)")
    else:
        result = api.amortize(prompts_file, config, overrides or [], out)
    report(result, f"sds3d amortize --resume {result.run_dir}")


@app.command(context_settings={"allow_extra_args": False})
def generate(
    args: Optional[List[str]] = typer.Argument(None, metavar="PROMPT [KEY=VALUE]...", show_default=False),
    generator: Optional[Path] = typer.Option(None, "--generator", "-g", help="A folder made by `sds3d amortize` "
                                             "(default: the bundled generator of the world's shapes)."),
    format: Optional[List[str]] = typer.Option(None, "--format", "-f", help="glb, obj or ply; repeat for several "
                                               "(default: the generator's export.formats)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The run folder (default: <out_dir>/<prompt-slug>-<time>)."),
):
    """Make an asset for PROMPT with a trained generator: one forward pass, then the usual export, in seconds.

    Writes a run folder like `sds3d run`'s (config.yaml, ckpt/last.pt, mesh.glb), so `sds3d export` and
    `sds3d refine` take it. export.* keys may be overridden, e.g. export.video_frames=24 for a turntable.
    """
    from sds3d import api

    prompt, overrides = split_args(args, "generate")
    if prompt is None:
        raise Sds3dError("no prompt given", hint='sds3d generate "a blue cone"')
    extra = [f"export.formats={list(format)}"] if format else []
    result = api.generate_with(generator or api.BUNDLED_GENERATOR, prompt, [*overrides, *extra], out)
    report(result, "")


@app.command(context_settings={"allow_extra_args": False})
def refine(
    run_dir: Path = typer.Argument(..., help="A finished run folder made by `sds3d run`."),
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", show_default=False),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="A YAML file or shipped config whose refine: section replaces "
                                          "the run's (default: the run's own, base.yaml's defaults)."),
    resume: bool = typer.Option(False, "--resume", help="Continue RUN_DIR/refine from its last checkpoint."),
):
    """The mesh stage: refine a run's mesh and texture, write RUN_DIR/refine/mesh.glb.

    The run's marching-cubes mesh gets learnable vertex offsets and a hash-grid texture (started from the
    run's albedo), optimised with the run's objective through a differentiable rasterizer at a higher
    resolution. Keys: refine.steps, refine.width, refine.height, refine.lr_offsets, refine.lr_texture,
    refine.lambda_laplacian, refine.lambda_normal_consistency, refine.rasterizer (torch | nvdiffrast),
    export.* for the textured mesh, for example:

      sds3d refine outputs/a-red-cube-20250101-120000 refine.steps=400 refine.width=128 refine.height=128
    """
    from sds3d import api

    if resume and config is not None:
        raise Sds3dError("--resume continues a refinement with its saved config", hint="drop --config; key=value overrides are allowed")
    result = api.refine(run_dir, config, overrides or [], resume)
    report(result, f"sds3d refine {run_dir} --resume")


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run folder made by `sds3d run`."),
    format: List[str] = typer.Option(["glb"], "--format", "-f", help="glb, obj or ply; repeat for several."),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", help="Marching-cubes grid per side (default: the run's)."),
    texture: Optional[bool] = typer.Option(None, "--texture/--vertex-colors", help="Bake a texture into glb/obj, or colour the vertices "
                                               "(default: the run's export.texture)."),
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", show_default=False),
):
    """Re-export meshes from a run's checkpoint; export.* keys (texture_resolution, max_faces, ...) may be overridden."""
    from sds3d import api

    overrides = [*(overrides or []), *([f"export.texture={str(texture).lower()}"] if texture is not None else [])]
    for path in api.export(run_dir, format, resolution, overrides):
        typer.echo(f"wrote {path}")


@app.command()
def configs():
    """List the shipped configs and the objectives, one line each."""
    from sds3d.config import CONFIGS_DIR, shipped_configs
    from sds3d.objectives import OBJECTIVES, describe

    typer.echo("configs (use with --config NAME):")
    for name in shipped_configs():
        first = (CONFIGS_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ").strip()
        typer.echo(f"  {name:<20} {first}")
    typer.echo("objectives (objective.name=NAME):")
    for name in OBJECTIVES:
        typer.echo(f"  {name:<20} {describe(name)}")


@app.command()
def keys(prefix: str = typer.Argument("", help="A section (objective.csd) or key (train.steps); empty for all.")):
    """List config keys with their defaults and meanings, from the schema (sds3d/config_schema.py)."""
    lines = key_listing(prefix)
    if not lines:
        raise Sds3dError(f"no config key or section '{prefix}'",
                         hint=f"sections: {', '.join(name for name, _ in sections())}")
    typer.echo("\n".join(lines))


@app.command("app")
def web_app(
    port: int = typer.Option(7860, "--port", "-p", help="Port to serve on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 exposes it to the network)."),
    outputs: Path = typer.Option(Path("outputs"), "--outputs", "-o", help="Runs go here; the gallery shows every run in it."),
    configs: Optional[List[Path]] = typer.Option(None, "--configs", "-c", help="Extra YAML configs (files or folders) to offer; "
                                                   "repeat for several."),
):
    """A local web page: prompt, config, objective and knobs, live progress, a 3D view of the result, past runs.

    Needs gradio, from the app extra: pip install -e '.\\[app]'. Nothing leaves the machine: gradio's telemetry is off.
    """
    from sds3d.app.server import serve

    serve(host, port, outputs, configs or [])


prior_app = typer.Typer(no_args_is_help=True, help="Train and check the bundled offline prior (assets/prior).")
app.add_typer(prior_app, name="prior")


@prior_app.command("train")
def prior_train(
    out: Path = typer.Option(Path("assets/prior"), help="Where the EMA weights go (diffusers folder)."),
    work: Path = typer.Option(Path("prior-work"), help="Checkpoint, rendered dataset and metrics; rerun to resume."),
    steps: int = typer.Option(4000, help="Total optimisation steps (a resumed run continues up to this)."),
    batch_size: int = typer.Option(32),
    dataset_size: int = typer.Option(10000, help="World renders made once and cached in the work folder."),
    seed: int = typer.Option(0),
    lr: float = typer.Option(1e-3, help="AdamW learning rate."),
    lr_schedule: str = typer.Option("constant", help="constant, or cosine: decays to 0 at --steps."),
    degrade_prob: float = typer.Option(0.25, help="Chance that an image is degraded (blurred, darkened, ...) and captioned so."),
    camera_dropout: float = typer.Option(0.1, help="Chance that an image's camera is given as unknown."),
    pair_prob: float = typer.Option(PAIR_PROB, min=0.0, max=1.0,
                                    help="Share of the rendered scenes that are pairs (the rest are singles)."),
    init: Optional[Path] = typer.Option(None, help="A prior folder to start from (e.g. the bundled one); ignored on resume."),
    text_encoder: str = typer.Option("clip", help="clip (causal, the bundled prior's) or t5 (bidirectional); from --init, "
                                                  "another kind than its own starts fresh."),
    grounding: float = typer.Option(0.0, min=0.0, help="Weight of the loss that keeps each object's colour and shape words' "
                                                        "cross-attention on that object's pixels (binds a pair's colours)."),
    pixel_grounding: float = typer.Option(0.0, min=0.0, help="Weight of the loss that has each object's pixels attend to "
                                                              "that object's colour and shape words."),
):
    """Train the prior on world renders; resumable (rerun the same command)."""
    from sds3d.prior.train import train_prior

    out_dir = train_prior(out, work, steps, batch_size=batch_size, lr=lr, dataset_size=dataset_size, seed=seed,
                          degrade_prob=degrade_prob, camera_dropout=camera_dropout, pair_prob=pair_prob,
                          init=init, lr_schedule=lr_schedule, text_encoder=text_encoder,
                          grounding=grounding, pixel_grounding=pixel_grounding)
    typer.echo(f"wrote {out_dir}")


@prior_app.command("sample")
def prior_sample(
    model: str = typer.Option("${asset:prior}", help="A pixel-space diffusers folder (default: the bundled prior)."),
    out: Path = typer.Option(Path("prior-samples.png"), help="The grid (a row per caption set); scores per caption: its .json."),
    steps: int = typer.Option(50, help="DDIM steps."),
    guidance_scale: float = typer.Option(7.5, help="Standard CFG scale (7.5: the scale runs guide with, objective.guidance_scale)."),
    seed: int = typer.Option(0),
):
    """Sample the evaluation captions, write a grid and print ground-truth checker scores."""
    import torch

    from sds3d.config import load_config
    from sds3d.guides.pixel import PixelGuide
    from sds3d.prior.sample import score_prior

    cfg = load_config(prompt="world", overrides=[f"guide.model={model}"])
    guide = PixelGuide.from_pretrained(cfg.guide.model, torch.device("cpu"), "fp32", cache_dir=cfg.guide.cache_dir)
    scores = score_prior(guide, cfg.cameras, out, steps, guidance_scale, seed)
    for name, value in scores.items():
        typer.echo(f"{name:<24} {value:.3f}")
    typer.echo(f"wrote {out} and {out.with_suffix('.json')}")


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: measured, never asserted in tests.")
app.add_typer(bench_app, name="bench")


def _check_bench_inputs(methods: Sequence[str], captions: Sequence[str]) -> None:
    """A missing method config, or a caption the world's ground truth cannot parse, fails before any run."""
    from sds3d.config import resolve_config_path
    from sds3d.world.scenes import parse_caption

    for name in methods:
        resolve_config_path(name)
    for caption in captions:
        try:
            parse_caption(caption)
        except ValueError as exc:
            raise Sds3dError(f"--prompt '{caption}': {exc}", hint="benchmark prompts are world captions such as 'a red cube'") from None


@bench_app.command("quality")
def bench_quality(
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", show_default=False),
    method: Optional[List[str]] = typer.Option(None, "--method", "-m", help="A method config (name or YAML); repeat for several "
                                                 "(default: all shipped methods on the bundled prior)."),
    prompt_set: Optional[List[str]] = typer.Option(None, "--set", help="single, pair, held-out, compositional (default: all)."),
    prompt: Optional[List[str]] = typer.Option(None, "--prompt", "-p", help="World captions to run instead of the sets; "
                                                 "repeat for several."),
    out: Path = typer.Option(Path("bench-quality"), help="Run folders, quality.json and quality.png go here."),
    refine: bool = typer.Option(False, "--refine", help="Also run the mesh stage on each run; score its renders against "
                                "the ground truth and the NeRF (PSNR, IoU)."),
    readme: Optional[Path] = typer.Option(None, help="Also write the table and picture into this README's bench-quality block."),
    generator: Optional[List[Path]] = typer.Option(None, "--generator", "-g", help="An amortized generator folder (`sds3d "
                                                   "amortize`) to score like the methods; repeat for several. With it, "
                                                   "only the methods given by --method run."),
):
    """Run the world prompt set through each method (and generator); print IoU, colour error, steps and time."""
    from sds3d.amortize.generate import load_generator
    from sds3d.bench.quality import METHODS, PROMPTS, format_table, run_quality
    from sds3d.bench.readme import check_markers

    unknown = [s for s in prompt_set or [] if s not in PROMPTS]
    if unknown:
        raise Sds3dError(f"unknown prompt set: {', '.join(unknown)}", hint=f"sets: {', '.join(PROMPTS)}")
    _check_bench_inputs(method or [], prompt or [])
    if readme is not None:
        check_markers(readme)  # before the hours of runs, not after
    for folder in generator or []:
        load_generator(folder)  # a folder that is not a generator fails before any run
    methods = method or ([] if generator else list(METHODS))
    rows = run_quality(methods, overrides or [], out, prompt_set or list(PROMPTS), prompt or [], refine, generator or [])
    typer.echo(format_table(rows))
    typer.echo(f"wrote {out / 'quality.json'} and {out / 'quality.png'}")
    if readme is not None:
        _write_report(readme, rows, [out / "quality.png"])


@bench_app.command("report")
def bench_report(
    folders: List[Path] = typer.Argument(..., help="Folders that `sds3d bench quality --out` wrote, in the table's order."),
    readme: Path = typer.Option(Path("README.md"), help="The README whose bench-quality block is replaced."),
):
    """Merge earlier `bench quality` folders (runs made in parallel, say) into the README's table and picture."""
    from sds3d.bench.readme import load_bench_folders

    _write_report(readme, *load_bench_folders(folders))


def _write_report(readme: Path, rows, pictures) -> None:
    from sds3d.bench.readme import write_report

    picture = write_report(readme, rows, pictures, shlex.join(["sds3d", *sys.argv[1:]]))
    typer.echo(f"wrote the bench-quality block of {readme} and {picture}")


@bench_app.command("gradients")
def bench_gradients(
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", show_default=False),
    method: Optional[List[str]] = typer.Option(None, "--method", "-m", help="A method config (name or YAML); repeat for several "
                                                 "(default: every shipped single-object method)."),
    prompt: str = typer.Option("a red cube", "--prompt", "-p", help="The world caption whose ground truth is rendered."),
    draws: int = typer.Option(8, min=1, help="Steps measured, spread evenly over the run."),
    albedo_gain: Optional[List[float]] = typer.Option(None, "--albedo-gain", min=0.0, help="Scale the object's albedo by this before "
                                                      "measuring; repeat for several (default: 1, the truth). Where 'brighter' changes "
                                                      "sign is the colour the method settles on."),
):
    """Each method's gradient at the ground truth: per-pixel scale and which way it pushes the opacity and colour."""
    from sds3d.bench.gradients import SINGLE_OBJECT_METHODS, format_gradients, run_gradients

    _check_bench_inputs(method or [], [prompt])
    rows = run_gradients(method or list(SINGLE_OBJECT_METHODS), prompt, overrides or [], draws, albedo_gain or [1.0])
    typer.echo(format_gradients(rows, prompt))


@bench_app.command("speed")
def bench_speed(
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", show_default=False),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="A YAML file or the name of a shipped config (default: base)."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Build the guide from its architecture config with random "
                                        "weights (no download; prompts as random embeddings)."),
    steps: int = typer.Option(10, min=1, help="Steps timed (twice: once plain for steps/s, once part by part)."),
    warmup: int = typer.Option(3, min=0, help="Untimed steps first."),
    start_step: int = typer.Option(0, min=0, help="Global step of the first warm-up step (schedules such as shading follow it)."),
    encodings: bool = typer.Option(True, help="Also time the hash-grid encoding backends on the same points."),
    encoding_points: int = typer.Option(2**18, min=1, help="Points for the encoding table."),
    encoding_levels: int = typer.Option(16, min=1, help="Levels for the encoding table."),
    encoding_repeats: int = typer.Option(3, min=1, help="Timed repeats per encoding backend (the median is reported)."),
    out: Path = typer.Option(Path("bench-speed.json"), help="Where the measurements go as JSON."),
    picard: int = typer.Option(0, "--picard", min=0, help="Instead: the whole run sequentially and with a DreamPropeller "
                               "window of this many workers (train.picard.window), wall time and GLB IoU of both."),
    prompt: str = typer.Option("a red cube", "--prompt", "-p", help="With --picard: the world caption both runs make."),
    runs: Path = typer.Option(Path("bench-picard"), "--runs", help="With --picard: where the two run folders go."),
):
    """Time the train step part by part, its guide-bound floor, steps/s, peak memory and the encoding backends
    (or, with --picard, DreamPropeller's wall-clock gain over a whole run)."""
    if picard:
        from sds3d.bench.picard import bench_picard, format_picard, write_picard

        result = bench_picard(config, overrides or [], prompt, picard, runs)
        typer.echo(format_picard(result))
        typer.echo(f"wrote {write_picard(result, out)}")
        return
    from sds3d.bench.speed import bench_speed as run_bench, encoding_rows, format_report, write_report

    result = run_bench(config, overrides or [], steps, warmup, start_step, random_weights)
    if encodings:
        result["encodings"] = encoding_rows(encoding_points, encoding_levels, result["device"], encoding_repeats)
    typer.echo(format_report(result))
    typer.echo(f"wrote {write_report(result, out)}")


def _interrupt_on_sigterm() -> None:
    """SIGTERM (timeout, docker stop, job schedulers, Ray) ends a command the way Ctrl-C does: a run
    saves its checkpoint and exports, the app stops its jobs the same way."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _silence_closed_output() -> None:
    """stdout or stderr is a closed pipe (``sds3d run ... | head``): later writes go nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, stream.fileno())


def main():
    _interrupt_on_sigterm()
    try:
        code = app(standalone_mode=False)
    except Sds3dError as exc:
        if state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        if exc.hint:
            typer.echo(f"hint: {exc.hint}", err=True)
        sys.exit(2)
    except typer.TyperException as exc:  # usage errors of typer's own copy of click
        exc.show()
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except BrokenPipeError:
        _silence_closed_output()
        sys.exit(141)  # what a shell reports for a command killed by SIGPIPE
    sys.exit(code if isinstance(code, int) else 0)
