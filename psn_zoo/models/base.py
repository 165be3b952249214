"""The base class of every psn_zoo network: input layouts, time handling, and the common method surface.

Inputs are batch-first at the edge and time-first ``[T, B, ...]`` inside (one transpose):

- image models: a static image ``[B, C, H, W]`` is repeated over ``T`` steps (direct encoding); event frames
  ``[B, T, C, H, W]`` (the layout of batched Tonic ``ToFrame`` output) are used as they are;
- sequence models: ``[B, T, C, L]``, one ``[C, L]`` slice per step (e.g. an image read column by column).

Every model offers ``forward`` (logits averaged over time, ``[B, classes]``), ``forward_steps`` (per-step
logits ``[T, B, classes]``, e.g. for the TET loss), ``forward_features`` / ``forward_head``,
``reset_classifier``, ``reset_states``, ``num_params`` and, with causal neurons, frame-by-frame streaming
through ``set_step_mode("s")`` and ``step``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..neurons import NeuronSpec, neuron_factory, neurons_of, reset_states, set_step_mode

InputKind = Literal["image", "sequence"]


class SpikingModel(nn.Module):
    """Base class. Subclasses build layers in ``__init__`` (neurons from :meth:`make_neuron`) and implement
    :meth:`forward_features` (``[T, B, ...] -> [T, B, F]``) and :meth:`forward_head`."""

    #: How batch-first inputs become time-first: see the module docstring.
    input_kind: ClassVar[InputKind] = "image"
    #: Dotted path of the final linear layer (replaced by :meth:`reset_classifier`).
    classifier_path: ClassVar[str] = "fc"

    def __init__(
        self,
        *,
        T: int,
        num_classes: int,
        in_channels: int,
        neuron: str | Mapping[str, Any] | NeuronSpec,
        neuron_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("T", T), ("num_classes", num_classes), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "num_classes" else 1):
                raise ValueError(f"{type(self).__name__}: {name} must be a positive integer, got {value!r}")
        self.T = T
        self.num_classes = num_classes
        self.in_channels = in_channels
        spec = NeuronSpec.parse(neuron)
        if neuron_kwargs:
            spec = spec.with_kwargs(**neuron_kwargs)
        self._make_neuron = neuron_factory(spec, T=T)
        self.neuron_spec: dict[str, Any] = spec.to_dict()
        self.fixed_T = spec.needs_T
        self._step_mode = "m"
        self._t = 0

    # ------------------------------------------------------------------ building
    def make_neuron(self) -> nn.Module:
        """A fresh neuron layer of the model's neuron type (T injected where the neuron needs it)."""
        return self._make_neuron()

    # ------------------------------------------------------------------ inputs
    def to_time_first(self, x: torch.Tensor) -> torch.Tensor:
        """Batch-first input -> time-first ``[T, B, ...]`` (see the module docstring for the layouts)."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"{type(self).__name__} expects a floating-point tensor, got {got}; use x.float()")
        name = type(self).__name__
        if self.input_kind == "image":
            if x.dim() == 4:
                self._check_channels(x.shape[1], x.shape)
                return x.unsqueeze(0).expand(self.T, *x.shape)
            if x.dim() == 5:
                self._check_channels(x.shape[2], x.shape)
                self._check_steps(x.shape[1], x.shape)
                return x.transpose(0, 1)
            raise ValueError(
                f"{name} expects a static image [B, C, H, W] or event frames [B, T, C, H, W], got shape "
                f"{tuple(x.shape)}"
            )
        if x.dim() == 4:
            self._check_channels(x.shape[2], x.shape)
            self._check_steps(x.shape[1], x.shape)
            return x.transpose(0, 1)
        raise ValueError(f"{name} expects a sequence [B, T, C, L], got shape {tuple(x.shape)}")

    def _check_channels(self, channels: int, shape: torch.Size) -> None:
        if channels != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} was built with in_channels={self.in_channels} but the input has {channels} "
                f"channels (shape {tuple(shape)}); build it with in_channels={channels}"
            )

    def _check_steps(self, steps: int, shape: torch.Size) -> None:
        if self.fixed_T and steps != self.T:
            raise ValueError(
                f"{type(self).__name__} with {self.neuron_spec['name']!r} neurons was built for T={self.T} but the "
                f"input has {steps} time steps on dim 1 (shape {tuple(shape)}); inputs are batch-first "
                f"[B, T, ...]. Build the model with T={steps} or resample the frames"
            )

    # ------------------------------------------------------------------ forward passes
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits averaged over time: ``[B, num_classes]``."""
        return self.forward_steps(x).mean(0)

    def forward_steps(self, x: torch.Tensor, *, time_first: bool = False) -> torch.Tensor:
        """Per-step logits ``[T, B, num_classes]``; ``time_first=True`` takes ``[T, B, ...]`` as is."""
        if self._step_mode != "m":
            raise RuntimeError(
                f"{type(self).__name__} is in streaming mode; call step(frame) per frame, or set_step_mode('m')"
            )
        x_seq = x if time_first else self.to_time_first(x)
        self.reset_states()
        try:
            return self.forward_head(self.forward_features(x_seq))
        finally:
            self.reset_states()  # drop membrane states (and the graph they hold) between batches

    def forward_features(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Time-first input -> pooled features ``[T, B, num_features]``."""
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features -> logits (or the classifier's input when ``pre_logits``)."""
        return features if pre_logits else self.get_classifier()(features)

    # ------------------------------------------------------------------ streaming
    def set_step_mode(self, mode: Literal["m", "s"]) -> None:
        """``"s"``: run frame by frame with :meth:`step` (causal neurons only); ``"m"``: whole sequences."""
        set_step_mode(self, mode)
        self._step_mode = mode
        self.reset_states()

    def step(self, frame: torch.Tensor) -> torch.Tensor:
        """One time step: a frame ``[B, C, H, W]`` (or ``[B, C, L]``) -> logits ``[B, num_classes]``.

        The neurons keep their state between calls; call :meth:`reset_states` between sequences.
        """
        if self._step_mode != "s":
            raise RuntimeError(f"call set_step_mode('s') before streaming with {type(self).__name__}.step")
        expected = 4 if self.input_kind == "image" else 3
        if frame.dim() != expected:
            raise ValueError(
                f"{type(self).__name__}.step expects one frame with {expected} dims, got {tuple(frame.shape)}"
            )
        self._check_channels(frame.shape[1], frame.shape)
        out = self.forward_head(self.forward_features(self._frame_input(frame)))
        self._t += 1
        return out

    def _frame_input(self, frame: torch.Tensor) -> torch.Tensor:
        """Hook for models that add a per-step term (e.g. a temporal embedding) to a streamed frame."""
        return frame

    # ------------------------------------------------------------------ the common surface
    def reset_states(self) -> None:
        """Reset every neuron (membrane potentials, input histories), the streaming dropout masks and the stream
        position."""
        reset_states(self)
        self._t = 0

    def get_classifier(self) -> nn.Module:
        module: nn.Module = self
        for part in self.classifier_path.split("."):
            module = module[int(part)] if part.isdigit() else getattr(module, part)  # type: ignore[index]
        return module

    @property
    def num_features(self) -> int:
        classifier = self.get_classifier()
        return classifier.in_features if isinstance(classifier, nn.Linear) else self._num_features

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final linear layer by a fresh one with ``num_classes`` outputs (0: identity)."""
        in_features = self.num_features
        self._num_features = in_features
        new: nn.Module = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()
        parent_path, _, last = self.classifier_path.rpartition(".")
        parent: nn.Module = self
        for part in parent_path.split(".") if parent_path else []:
            parent = parent[int(part)] if part.isdigit() else getattr(parent, part)  # type: ignore[index]
        old = self.get_classifier()
        new = new.to(next(old.parameters()).device) if any(True for _ in old.parameters()) else new
        if last.isdigit():
            parent[int(last)] = new  # type: ignore[index]
        else:
            setattr(parent, last, new)
        self.num_classes = num_classes

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def neuron_layers(self) -> list[nn.Module]:
        return list(neurons_of(self))

    def extra_repr(self) -> str:
        return f"T={self.T}, neuron={self.neuron_spec}"
