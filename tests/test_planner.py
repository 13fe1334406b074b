"""The layout planner against a local fake OpenAI-compatible server: the request it sends, the layout
it reads back (fenced or bare JSON), and the errors for bad answers and unreachable endpoints."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from sds3d.errors import ConfigError, Sds3dError
from sds3d.layout import plan_layout
from sds3d.layout.planner import chat_endpoint

LAYOUT = {"prompt": "a red cube to the left of a blue sphere", "objects": [
    {"prompt": "a red cube", "center": [0.0, -0.42, 0.0], "size": [0.8, 0.8, 0.8]},
    {"prompt": "a blue sphere", "center": [0.0, 0.42, 0.0], "size": [0.8, 0.8, 0.8]}]}


@pytest.fixture
def server():
    """A chat-completions server answering ``state["content"]`` (status ``state["status"]``); records requests."""
    state = {"content": "", "status": 200, "requests": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["requests"].append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
            answer = json.dumps({"choices": [{"message": {"role": "assistant", "content": state["content"]}}]}).encode()
            self.send_response(state["status"])
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1", state
    httpd.shutdown()
    httpd.server_close()


def test_planner_sends_the_prompt_and_reads_a_fenced_layout(server, monkeypatch):
    url, state = server
    monkeypatch.setenv("PLANNER_KEY", "secret")
    state["content"] = "Here is the layout:\n```json\n" + json.dumps(LAYOUT) + "\n```"
    layout = plan_layout("a red cube to the left of a blue sphere", url, model="m1", api_key_env="PLANNER_KEY", radius=1.0)
    assert [(r.prompt, r.box.center) for r in layout.regions] == [("a red cube", (0.0, -0.42, 0.0)), ("a blue sphere", (0.0, 0.42, 0.0))]
    (request,) = state["requests"]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer secret"
    assert request["body"]["model"] == "m1"
    assert request["body"]["messages"][-1] == {"role": "user", "content": "a red cube to the left of a blue sphere"}


def test_planner_reads_bare_json_and_sends_no_key_when_unset(server, monkeypatch):
    url, state = server
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    state["content"] = json.dumps(LAYOUT)
    assert plan_layout("x", url, api_key_env="NO_SUCH_KEY_VAR").prompt == LAYOUT["prompt"]
    assert state["requests"][0]["auth"] is None


def test_planned_layout_is_validated_like_a_file(server):
    url, state = server
    overlapping = {**LAYOUT, "objects": [LAYOUT["objects"][0], {**LAYOUT["objects"][1], "center": [0.0, 0.0, 0.0]}]}
    state["content"] = json.dumps(overlapping)
    with pytest.raises(ConfigError, match="overlapping boxes"):
        plan_layout("x", url)


def test_an_answer_without_json_is_a_config_error(server):
    url, state = server
    state["content"] = "I cannot help with that."
    with pytest.raises(ConfigError, match="without a JSON layout"):
        plan_layout("x", url)


def test_an_http_error_names_the_status(server):
    url, state = server
    state["status"] = 500
    with pytest.raises(Sds3dError, match="answered HTTP 500"):
        plan_layout("x", url)


def test_an_unreachable_endpoint_says_so():
    with pytest.raises(Sds3dError, match="cannot reach the layout planner at http://127.0.0.1:9/chat/completions"):
        plan_layout("x", "http://127.0.0.1:9", timeout=2.0)


def test_chat_endpoint_appends_the_completions_path_once():
    assert chat_endpoint("http://h/v1/") == "http://h/v1/chat/completions"
    assert chat_endpoint("http://h/v1/chat/completions") == "http://h/v1/chat/completions"


def test_generate_with_a_planner_saves_the_layout_in_the_run_folder(server, tmp_path, monkeypatch):
    from sds3d import api

    url, state = server
    state["content"] = json.dumps(LAYOUT)
    trained = {}
    monkeypatch.setattr(api, "train", lambda cfg, run_dir, should_stop=None: trained.update(cfg=cfg, run_dir=run_dir))
    api.generate("a red cube to the left of a blue sphere", "semantic", [f"layout.planner.url={url}", "layout.file=''"],
                 run_dir=tmp_path / "run")
    path = tmp_path / "run" / "layout.json"
    assert trained["cfg"].layout.file == str(path) and json.loads(path.read_text())["objects"][1]["prompt"] == "a blue sphere"
