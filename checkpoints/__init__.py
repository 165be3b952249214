"""Published psn_zoo checkpoints: ``manifest.json``, the sha256-named safetensors files and their model cards.

Use them through :func:`psn_zoo.load_pretrained`; this package only carries the files.
"""
