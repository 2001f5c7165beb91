"""The contract between training and serving: what a model bundle is and how an image becomes its input.

Nothing here imports `service` or `training` (see docs/architecture.md): both import this.
"""
