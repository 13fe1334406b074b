"""Starts the page on a local port with every gradio call out turned off: no telemetry or version
check, no share link, no run history (whose page offers a Hugging Face bucket), no MCP server."""

import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sds3d.app.request import config_choices
from sds3d.app.worker import Worker
from sds3d.errors import Sds3dError


@dataclass
class Server:
    page: object  # gr.Blocks
    worker: Worker
    url: str

    def close(self) -> None:
        self.page.close()
        self.worker.shutdown()


def start(host: str = "127.0.0.1", port: int = 7860, outputs: Path = Path("outputs"), configs: Sequence[Path] = ()) -> Server:
    """Serve the page in background threads and return; ``close()`` stops the server and the worker."""
    # gradio reads this when a Blocks is built: False skips its version check and launch telemetry and
    # makes it set HF_HUB_DISABLE_TELEMETRY.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        importlib.import_module("gradio")
    except ImportError as exc:
        raise Sds3dError("the web app needs gradio, which is not installed",
                         hint="install the app extra: pip install -e '.[app]'  (or pip install 'sds3d[app]')") from exc
    from sds3d.app.page import build_page

    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own startup requests to its local port

    outputs = Path(outputs).expanduser().resolve()
    for entry in configs:
        if not Path(entry).exists():
            raise Sds3dError(f"--configs '{entry}' does not exist", hint="give a YAML file or a folder of them")
    worker = Worker()
    page = build_page(worker, outputs, config_choices(configs))
    _, url, _ = page.queue().launch(
        server_name=host, server_port=port, share=False, prevent_thread_lock=True, quiet=True,
        allowed_paths=[str(outputs)], run_history=False, mcp_server=False, ssr_mode=False, pwa=False,
        footer_links=["settings"],
    )
    return Server(page, worker, url)


def serve(host: str = "127.0.0.1", port: int = 7860, outputs: Path = Path("outputs"), configs: Sequence[Path] = ()) -> None:
    """Serve until Ctrl-C; a run still going then stops, keeping its checkpoint and exports."""
    server = start(host, port, outputs, configs)
    print(f"sds3d app on {server.url} (runs in {outputs}); Ctrl-C stops it", flush=True)
    try:
        server.page.block_thread()
    finally:
        server.close()
