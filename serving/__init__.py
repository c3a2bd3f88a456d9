"""Serving: the FastAPI app (recording page, labeling workbench; the device API joins it later)."""
