"""`sds3d batch`: one job per prompt on Ray (local workers or a cluster), an index, retries and resume.

``jobs`` reads and checks the prompts file, ``index`` keeps index.json, ``worker`` is what runs in a
Ray worker, ``runner`` starts Ray and schedules the jobs. Ray is imported only inside ``runner``'s
functions, so the rest of sds3d works without the [ray] extra.
"""
