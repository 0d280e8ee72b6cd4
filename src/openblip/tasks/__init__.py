"""User-facing pipelines: images and strings in, Python objects out."""
