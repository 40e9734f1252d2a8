"""The local web gallery (``photosift serve``): browse by category, see why, correct, run and stop scans.

FastAPI, Jinja2 and uvicorn are imported only here and below, so the CLI starts fast without them
(they come with the ``web`` extra). Start with :func:`photosift.web.app.create_app`.
"""
