"""The optional layout planner: a plain prompt -> a Layout, asked of any OpenAI-compatible chat endpoint.

Off unless ``layout.planner.url`` is set. One POST to ``<url>/chat/completions`` (stdlib urllib) with a
system message stating the layout format and the scene frame; the JSON in the answer (bare or in a
fenced block) is validated exactly like a layout file.
"""

import json
import os
import re
import urllib.error
import urllib.request

from sds3d.errors import ConfigError, Sds3dError
from sds3d.layout.spec import Layout, parse_layout

SYSTEM = (
    "You plan 3D scenes for a text-to-3D generator. Answer with one JSON object and nothing else:\n"
    '{{"prompt": "<the whole scene>", "objects": [{{"prompt": "<one object>", "center": [x, y, z], "size": [sx, sy, sz], '
    '"parts": [{{"prompt": "<one part>", "center": [x, y, z], "size": [sx, sy, sz]}}]}}]}}\n'
    "Frame: z is up and the viewer looks from +x, so the viewer's left is -y and right is +y. Sizes are full side "
    "lengths. Every box lies inside the cube [-{radius}, {radius}]^3. Object boxes do not overlap. \"parts\" is optional; "
    "a part's box lies inside its object's box and parts of one object do not overlap."
)


def chat_endpoint(url: str) -> str:
    """``url`` as given when it already ends in /chat/completions, else with that appended (a base URL such as .../v1)."""
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


def plan_layout(prompt: str, url: str, model: str = "", api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0,
                radius: float = 1.0) -> Layout:
    """Asks the chat model at ``url`` for a layout of ``prompt``; the key in ``$api_key_env`` is sent when set."""
    endpoint = chat_endpoint(url)
    body = {"model": model, "temperature": 0,
            "messages": [{"role": "system", "content": SYSTEM.format(radius=radius)}, {"role": "user", "content": prompt}]}
    headers = {"Content-Type": "application/json"}
    if api_key_env and os.environ.get(api_key_env):
        headers["Authorization"] = f"Bearer {os.environ[api_key_env]}"
    request = urllib.request.Request(endpoint, json.dumps(body).encode(), headers, method="POST")
    hint = "check layout.planner.url (and .model), or give a layout file with --layout"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
        content = answer["choices"][0]["message"]["content"]
    except urllib.error.HTTPError as exc:
        body = exc.read()[:200].decode(errors="replace")
        raise Sds3dError(f"layout planner at {endpoint} answered HTTP {exc.code}: {body}", hint=hint) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise Sds3dError(f"cannot reach the layout planner at {endpoint}: {getattr(exc, 'reason', exc)}", hint=hint) from exc
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise Sds3dError(f"layout planner at {endpoint} did not answer with an OpenAI chat completion", hint=hint) from exc
    return parse_layout(answer_json(content, endpoint), radius, source=f"the layout planned by {endpoint}")


def answer_json(content: str, endpoint: str):
    """The JSON object in a chat answer: inside a ``` fence if there is one, else from the first { to the last }."""
    fenced = re.search(r"```(?:json)?\s*(.*?)```", content, re.DOTALL)
    text = fenced.group(1) if fenced else content[content.find("{") : content.rfind("}") + 1]
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"the layout planner at {endpoint} answered without a JSON layout: {content[:200]!r}",
                          hint="try another layout.planner.model, or write the layout by hand (assets/layouts/)") from exc
