"""`sds3d app`: a local gradio page to run prompts and browse runs (the optional [app] extra).

Only ``server`` and ``page`` import gradio, and only when the app starts."""
