"""The gradio page: the form, live progress of this browser's run, the finished run's viewer, video,
GLB and loss curve, and a gallery of every run in the outputs folder."""

from pathlib import Path
from typing import List, Optional, Tuple

import gradio as gr
import pandas as pd

from sds3d.app.request import MAX_PROMPT_CHARS, MAX_STEPS, Knobs, build_request, explain, knob_defaults
from sds3d.app.runs import latest_grid, loss_curve, read_metrics, read_progress, scan_runs, summarise
from sds3d.app.worker import FINISHED, RUNNING, STOPPED, WAITING, Job, Worker
from sds3d.errors import Sds3dError
from sds3d.objectives import OBJECTIVES

POLL_S = 1.0


def checked_number(*args, **kwargs) -> gr.Number:
    """A number field that answers a non-numeric value (sent through the API) with a message, not a
    blank error. Its preprocess is wrapped rather than subclassed: gradio writes a .pyi type-hint file
    beside every Component subclass it meets."""
    field = gr.Number(*args, **kwargs)
    convert = field.preprocess

    def preprocess(payload):
        if payload is not None and (isinstance(payload, bool) or not isinstance(payload, (int, float))):
            raise gr.Error(f"{field.label} must be a number, got {payload!r}")
        return convert(payload)

    field.preprocess = preprocess
    return field


def job_status(job: Job, ahead: int) -> str:
    if job.state == WAITING:
        return f"Queued '{job.request.prompt}' behind {ahead} run(s)."
    if job.state == RUNNING:
        progress = read_progress(job.run_dir, job.request.cfg.train.steps)
        if not progress.step:
            doing = "loading the model, first steps"
        elif progress.step == progress.total:
            doing = f"{progress.describe()}; exporting the mesh and video"
        else:
            doing = progress.describe()
        return f"Running '{job.request.prompt}': {doing}\n{job.run_dir}"
    if job.state == FINISHED:
        return f"Finished '{job.request.prompt}'.\n{job.run_dir}"
    if job.state == STOPPED:
        kept = f"\nCheckpoint and exports kept in {job.run_dir}" if job.run_dir else ""
        return f"Stopped '{job.request.prompt}' {job.message}.{kept}"
    return f"Failed '{job.request.prompt}':\n{job.message}"


def curve_frame(run_dir: Path) -> pd.DataFrame:
    return pd.DataFrame(loss_curve(read_metrics(run_dir)), columns=["step", "term", "value"])


def build_page(worker: Worker, outputs: Path, choices: List[Tuple[str, str]]) -> gr.Blocks:
    default = "base" if ("base", "base") in choices else choices[0][1]
    knobs = knob_defaults(default)
    with gr.Blocks(title="sds3d", analytics_enabled=False) as page:
        job_id = gr.State(None)  # the run this page follows: its latest request, or the one running when it loaded
        listed = gr.State([])  # the gallery's run folders, in its order
        gr.Markdown("## sds3d: text to 3D by score distillation")
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="Prompt", placeholder="a red cube", max_length=MAX_PROMPT_CHARS, elem_id="prompt")
                config = gr.Dropdown(choices, value=default, label="Config", elem_id="config")
                objective = gr.Dropdown(list(OBJECTIVES), value=knobs.objective, label="Objective", elem_id="objective")
                with gr.Row():
                    steps = checked_number(knobs.steps, label="Steps", precision=0, minimum=1, maximum=MAX_STEPS, elem_id="steps")
                    scale = checked_number(knobs.guidance_scale, label="Guidance scale", elem_id="guidance")
                    seed = checked_number(knobs.seed, label="Seed", precision=0, elem_id="seed")
                with gr.Row():
                    run = gr.Button("Run", variant="primary", elem_id="run")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                status = gr.Textbox(label="Status", interactive=False, lines=3, elem_id="status")
                grid = gr.Image(label="Latest validation grid (rgb | normal | opacity)", type="filepath", height=300,
                                interactive=False, elem_id="grid")
            with gr.Column(scale=2):
                viewer = gr.Model3D(label="Mesh", height=420, elem_id="viewer")
                download = gr.DownloadButton("Download mesh.glb", visible=False, elem_id="download")
                with gr.Row():
                    video = gr.Video(label="Turntable", autoplay=True, loop=True, interactive=False, elem_id="video")
                    curve = gr.LinePlot(x="step", y="value", color="term", label="Loss", elem_id="curve")
        gallery = gr.Gallery(label="Runs in the outputs folder (select one to view it)", columns=6, fit_columns=False,
                             height=320, object_fit="contain", allow_preview=False, elem_id="gallery")
        refresh = gr.Button("Refresh runs", size="sm")
        timer = gr.Timer(POLL_S, active=False)

        def gallery_view():
            runs = scan_runs(outputs)
            return {gallery: [(str(r.thumbnail), r.caption) for r in runs], listed: [str(r.run_dir) for r in runs]}

        def run_view(run_dir: Path):
            summary = summarise(run_dir)
            mesh = summary.mesh if summary else None
            return {
                viewer: str(mesh) if mesh else None,
                download: gr.DownloadButton(value=str(mesh) if mesh else None, visible=mesh is not None),
                video: str(summary.video) if summary and summary.video else None,
                curve: curve_frame(run_dir),
                grid: str(latest_grid(run_dir)) if latest_grid(run_dir) else None,
            }

        def on_config(name: str):
            try:
                k = knob_defaults(name)
            except Sds3dError as exc:
                return {status: explain(exc)}
            return {objective: k.objective, steps: k.steps, scale: k.guidance_scale, seed: k.seed, status: ""}

        def on_run(text: str, name: str, obj: str, n: Optional[float], s: Optional[float], sd: Optional[float]):
            try:
                job = worker.submit(build_request(text, name, Knobs(obj, n, s, sd), outputs))
            except Sds3dError as exc:
                return {status: f"Cannot start: {explain(exc)}"}
            return {job_id: job.id, status: job_status(job, worker.ahead_of(job)), timer: gr.Timer(active=True)}

        def on_stop(current: Optional[int]):
            if current is None or worker.job(current).done:
                return {status: "Nothing is running."}
            worker.stop(current)
            return {status: f"Stopping '{worker.job(current).request.prompt}' after its current step..."}

        def on_tick(current: Optional[int]):
            if current is None:
                return {timer: gr.Timer(active=False)}
            job = worker.job(current)
            update = {status: job_status(job, worker.ahead_of(job))}
            if job.state == RUNNING and latest_grid(job.run_dir):
                update[grid] = str(latest_grid(job.run_dir))
            if job.done:
                update[timer] = gr.Timer(active=False)
                update.update(gallery_view())
                if job.state in (FINISHED, STOPPED) and job.run_dir and job.run_dir.is_dir():
                    update.update(run_view(job.run_dir))
            return update

        def on_load():
            """A reloaded page follows the run in progress again, and can stop it."""
            job = worker.current()
            return {**gallery_view(), **({job_id: job.id, timer: gr.Timer(active=True)} if job else {})}

        def on_select(runs: List[str], evt: gr.SelectData):
            run_dir = Path(runs[evt.index])
            summary = summarise(run_dir)
            about = f"{summary.caption}\n{summary.steps}/{summary.total_steps} steps · {run_dir}" if summary else str(run_dir)
            return {status: about, **run_view(run_dir)}

        every = {status, grid, viewer, download, video, curve, gallery, listed, timer}
        config.change(on_config, config, {objective, steps, scale, seed, status})
        run.click(on_run, [prompt, config, objective, steps, scale, seed], {job_id, status, timer})
        stop.click(on_stop, job_id, status)
        timer.tick(on_tick, job_id, every)
        gallery.select(on_select, listed, every - {gallery, listed, timer})
        refresh.click(gallery_view, None, {gallery, listed})
        page.load(on_load, None, {gallery, listed, job_id, timer})
    return page

