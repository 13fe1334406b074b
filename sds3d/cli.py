"""`sds3d run | export | configs`: parses, calls the API, prints errors as a message and a hint."""

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
    from sds3d.config import is_override

    args = args or []
    overrides = [a for a in args if is_override(a)]
    prompts = [a for a in args if not is_override(a)]
    if len(prompts) > 1:
        raise Sds3dError(f"expected one prompt, got {len(prompts)}: {prompts}", hint='quote the prompt: sds3d run "a red cube"')
    if resume is not None:
        if prompts or config:
            raise Sds3dError("--resume continues a run with its saved config", hint="drop the prompt and --config; key=value overrides are allowed")
        result = api.resume(resume, overrides)
    else:
        result = api.generate(prompts[0] if prompts else None, config, overrides)
    for path in result.outputs:
        typer.echo(f"wrote {path}")
    typer.echo(f"{result.steps} steps, {result.seconds_per_step:.3f} s/step, run folder {result.run_dir}")
    if result.interrupted:
        typer.echo(f"interrupted: continue with  sds3d run --resume {result.run_dir}")
        raise typer.Exit(130)


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
