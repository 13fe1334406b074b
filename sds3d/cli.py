"""`sds3d run | image | export | configs`: parses, calls the API, prints errors as a message and a hint."""

import logging
import sys
from pathlib import Path
from typing import List, Optional

import click
import typer

from sds3d.errors import Sds3dError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Text to 3D by score distillation: prompt in, GLB out.\n\n"
    'Example: sds3d run "a hamburger" train.steps=2000 seed=3. Any config key can be overridden as key.path=value: '
    "guide.model, train.steps, seed, objective.name, objective.guidance_scale, out_dir, ... (see `sds3d run --help`).",
)
state = {"debug": False}


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and debug logs.")):
    state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(message)s")


@app.command(context_settings={"allow_extra_args": False})
def run(
    args: Optional[List[str]] = typer.Argument(None, metavar="[PROMPT] [KEY=VALUE]...", show_default=False),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="A YAML file or the name of a shipped config (`sds3d configs`)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run folder from its last checkpoint."),
):
    """Optimise a 3D scene for PROMPT and write outputs/<slug>-<time>/mesh.glb.

    Any config key can be overridden as key.path=value, for example:

      guide.model=stabilityai/stable-diffusion-2-1-base (hub id or local folder),
      train.steps=2000, seed=3, objective.name=sds, objective.guidance_scale=50,
      out_dir=my-runs, prompt.negative="blurry".

    configs/base.yaml documents every key. With --resume, overrides such as train.steps=20000 extend the run.
    """
    from sds3d import api

    prompt, overrides = split_args(args, "run")
    if resume is not None:
        if prompt is not None or config:
            raise Sds3dError("--resume continues a run with its saved config", hint="drop the prompt and --config; key=value overrides are allowed")
        result = api.resume(resume, overrides)
    else:
        result = api.generate(prompt, config, overrides)
    for path in result.outputs:
        typer.echo(f"wrote {path}")
    typer.echo(f"{result.steps} steps, {result.seconds_per_step:.3f} s/step, run folder {result.run_dir}")
    if result.interrupted:
        typer.echo(f"interrupted: continue with  sds3d run --resume {result.run_dir}")
        raise typer.Exit(130)


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


def split_args(args: Optional[List[str]], command: str):
    """PROMPT and KEY=VALUE arguments, in any order -> (the prompt or None, the overrides)."""
    from sds3d.config import is_override

    args = args or []
    prompts = [a for a in args if not is_override(a)]
    if len(prompts) > 1:
        raise Sds3dError(f"expected one prompt, got {len(prompts)}: {prompts}", hint=f'quote the prompt: sds3d {command} "a red cube"')
    return (prompts[0] if prompts else None), [a for a in args if is_override(a)]


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run folder made by `sds3d run`."),
    format: List[str] = typer.Option(["glb"], "--format", "-f", help="glb, obj or ply; repeat for several."),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", help="Marching-cubes grid per side (default: the run's)."),
):
    """Re-export meshes from a run's checkpoint."""
    from sds3d import api

    for path in api.export(run_dir, format, resolution):
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
):
    """Train the prior on world renders; resumable (rerun the same command)."""
    from sds3d.prior.train import train_prior

    typer.echo(f"wrote {train_prior(out, work, steps, batch_size=batch_size, dataset_size=dataset_size, seed=seed)}")


@prior_app.command("sample")
def prior_sample(
    model: str = typer.Option("${asset:prior}", help="A pixel-space diffusers folder (default: the bundled prior)."),
    out: Path = typer.Option(Path("prior-samples.png"), help="The grid: one row per caption set."),
    steps: int = typer.Option(50, help="DDIM steps."),
    guidance_scale: float = typer.Option(3.0, help="Standard CFG scale."),
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
    typer.echo(f"wrote {out}")


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: measured, never asserted in tests.")
app.add_typer(bench_app, name="bench")


@bench_app.command("quality")
def bench_quality(
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", show_default=False),
    method: Optional[List[str]] = typer.Option(None, "--method", "-m", help="A method config (name or YAML); repeat for several (default: all shipped methods on the bundled prior)."),
    prompt_set: Optional[List[str]] = typer.Option(None, "--set", help="single, pair, held-out (default: all)."),
    prompt: Optional[List[str]] = typer.Option(None, "--prompt", "-p", help="World captions to run instead of the sets; repeat for several."),
    out: Path = typer.Option(Path("bench-quality"), help="Run folders, quality.json and quality.png go here."),
):
    """Run the world prompt set through each method; print IoU, colour error, steps and time."""
    from sds3d.bench.quality import METHODS, PROMPTS, format_table, run_quality
    from sds3d.config import resolve_config_path

    unknown = [s for s in prompt_set or [] if s not in PROMPTS]
    if unknown:
        raise Sds3dError(f"unknown prompt set: {', '.join(unknown)}", hint=f"sets: {', '.join(PROMPTS)}")
    for name in method or []:
        resolve_config_path(name)  # a missing config fails before any run starts
    rows = run_quality(method or list(METHODS), overrides or [], out, prompt_set or list(PROMPTS), prompt or [])
    typer.echo(format_table(rows))
    typer.echo(f"wrote {out / 'quality.json'} and {out / 'quality.png'}")


def main():
    try:
        code = app(standalone_mode=False)
    except Sds3dError as exc:
        if state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        if exc.hint:
            typer.echo(f"hint: {exc.hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
