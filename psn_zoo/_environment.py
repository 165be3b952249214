"""Checks of the installed environment that would otherwise fail deep inside another library."""

from __future__ import annotations


def check_torchvision() -> None:
    """Exit with a clear message when an installed torchvision does not load with the installed torch.

    torchmetrics (and so every training command) imports torchvision whenever it is installed, and a torchvision
    built for another torch fails there with ``operator torchvision::nms does not exist``. That happens when the
    test extras (torch 2.14.1 + torchvision 0.29.1) were installed first and the README's demo command then pins
    the CPU build ``torch==2.13.0``.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("torchvision")
    except PackageNotFoundError:
        return
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError, OSError) as exc:
        import torch

        raise SystemExit(
            f"psn-zoo: torchvision {installed} does not load with the installed torch {torch.__version__} "
            f"({type(exc).__name__}: {exc}); torchmetrics imports it whenever it is installed. Either install the "
            "torch it was built for (torchvision 0.29.1 needs `pip install torch==2.14.1`, as the test extras do) "
            "or remove it (`pip uninstall torchvision`)."
        ) from None
