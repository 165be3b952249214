"""The base class of every psn_zoo network: input layouts, time handling, and the common method surface.

Inputs are batch-first at the edge and time-first ``[T, B, ...]`` inside (one transpose):

- image models: a static image ``[B, C, H, W]`` is repeated over ``T`` steps (direct encoding); event frames
  ``[B, T, C, H, W]`` (the layout of batched Tonic ``ToFrame`` output) are used as they are;
- sequence models: ``[B, T, C, L]``, one ``[C, L]`` slice per step (e.g. an image read column by column).

Every model offers ``forward`` (logits averaged over time, ``[B, classes]``), ``forward_steps`` (per-step
logits ``[T, B, classes]``, e.g. for the TET loss), ``forward_features`` (``[B, T, F]``) / ``forward_head``
(``[B, T, F] -> [B, classes]``, so ``forward(x) == forward_head(forward_features(x))``), ``reset_classifier``,
``reset_states``, ``num_params`` and, with causal neurons, frame-by-frame streaming through ``set_step_mode("s")``
and ``step``.

All four passes take batch-first input; ``time_first=True`` takes ``[T, B, ...]`` instead (and ``forward_features``
then returns ``[T, B, F]``). The layout is never guessed from the shape: a ``[4, 4, ...]`` tensor is read as the
argument says. Each pass resets every neuron before and after it, so it is pure: the same input gives the same
output, and no membrane (or autograd graph) leaks between calls. A model loaded from an event-frames checkpoint
refuses a 4-dim input, which could be one unbatched sample ``[T, C, H, W]`` as well as static images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..neurons import MaskedPSN, NeuronSpec, neuron_factory, neurons_of, reset_states, set_step_mode

InputKind = Literal["image", "sequence"]


def _check_count(owner: str, name: str, value: Any, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "a positive integer" if low == 1 else "an integer >= 0"
        raise ValueError(f"{owner}: {name} must be {kind}, got {value!r}")


class SpikingModel(nn.Module):
    """Base class. Subclasses build layers in ``__init__`` (neurons from :meth:`make_neuron`) and implement
    :meth:`forward_features` (``[T, B, ...] -> [T, B, F]``) and :meth:`forward_head`."""

    #: How batch-first inputs become time-first: see the module docstring.
    input_kind: ClassVar[InputKind] = "image"
    #: Dotted path of the final linear layer (replaced by :meth:`reset_classifier`).
    classifier_path: ClassVar[str] = "fc"
    #: The loaded checkpoint's metadata (:class:`psn_zoo.hub.CheckpointInfo`, timm's name), None without one.
    pretrained_cfg: Any = None
    #: State-dict keys left at their initial values when the weights were loaded (a classifier re-initialised for
    #: another ``num_classes``); empty when every tensor came from the checkpoint.
    reinitialized: tuple[str, ...] = ()

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
            _check_count(type(self).__name__, name, value, low=0 if name == "num_classes" else 1)
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
    def to_time_first(self, x: torch.Tensor, *, time_first: bool = False) -> torch.Tensor:
        """The input as the layers take it, time-first ``[T, B, ...]``, checked (see the module docstring).

        ``time_first=False``: batch-first ``[B, T, ...]`` (or a static image ``[B, C, H, W]``, repeated over T);
        ``time_first=True``: ``[T, B, ...]`` as is. The layout is what the argument says, never inferred.
        """
        self._check_float(x)
        name = type(self).__name__
        seq_dims = 5 if self.input_kind == "image" else 4
        layout = "[T, B, C, H, W]" if self.input_kind == "image" else "[T, B, C, L]"
        if time_first:
            if x.dim() != seq_dims:
                raise ValueError(f"{name} with time_first=True expects {layout}, got shape {tuple(x.shape)}")
            self._check_channels(x.shape[2], x.shape)
            self._check_steps(x.shape[0], x.shape, dim=0)
            return x
        if self.input_kind == "image":
            if x.dim() == 4:
                self._check_not_unbatched_frames(x)
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

    def _check_float(self, x: Any) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"{type(self).__name__} expects a floating-point tensor, got {got}; use x.float()")

    def _check_not_unbatched_frames(self, x: torch.Tensor) -> None:
        """A checkpoint trained on event frames takes ``[B, T, C, H, W]`` only: a 4-dim tensor could be one unbatched
        sample ``[T, C, H, W]`` as well as ``B`` static images, and which one is never guessed."""
        cfg = self.pretrained_cfg
        if cfg is not None and getattr(cfg.input, "kind", None) == "event_frames":
            raise ValueError(
                f"{type(self).__name__} ({cfg.name}) was trained on event frames [B, T, C, H, W] but got a 4-dim "
                f"tensor {tuple(x.shape)}: for one sample [T, C, H, W] add the batch dimension (x.unsqueeze(0)); to "
                "show static images, repeat them over time yourself (x.unsqueeze(1).expand(-1, T, -1, -1, -1))"
            )

    def _check_channels(self, channels: int, shape: torch.Size) -> None:
        if channels != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} was built with in_channels={self.in_channels} but the input has {channels} "
                f"channels (shape {tuple(shape)}); build it with in_channels={channels}"
            )
        self._check_size(shape)

    #: For a classifier sized by the input (it follows a flatten, not a global pool): ``(argument, its value, the
    #: pools' divisor)``; every spatial dim ``d`` of an input must pool to the same size, ``d // divisor``.
    input_grid: tuple[str, int, int] | None = None

    def _check_size(self, shape: torch.Size) -> None:
        if self.input_grid is None:
            return
        arg, value, divisor = self.input_grid
        dims = tuple(shape[-2:]) if self.input_kind == "image" else tuple(shape[-1:])
        if any(d // divisor != value // divisor for d in dims):
            lo = value // divisor * divisor
            per = " per side" if self.input_kind == "image" else ""
            raise ValueError(
                f"{type(self).__name__} was built with {arg}={value} (its classifier takes {lo} to {lo + divisor - 1}"
                f"{per}) but got {'×'.join(str(d) for d in dims)} (shape {tuple(shape)}): build it with "
                f"{arg}={dims[0]}, or resize the input"
            )

    def _check_steps(self, steps: int, shape: torch.Size, dim: int = 1) -> None:
        if self.fixed_T and steps != self.T:
            layout = "time-first [T, B, ...] (time_first=True)" if dim == 0 else "batch-first [B, T, ...]"
            raise ValueError(
                f"{type(self).__name__} with {self.neuron_spec['name']!r} neurons was built for T={self.T} but the "
                f"input has {steps} time steps on dim {dim} (shape {tuple(shape)}); the input was read as {layout}. "
                f"Build the model with T={steps}, resample the frames, or pass the layout your tensor has"
            )

    # ------------------------------------------------------------------ forward passes
    def forward(self, x: torch.Tensor, *, time_first: bool = False) -> torch.Tensor:
        """Logits averaged over time: ``[B, num_classes]``."""
        return self.forward_steps(x, time_first=time_first).mean(0)

    def forward_steps(self, x: torch.Tensor, *, time_first: bool = False) -> torch.Tensor:
        """Per-step logits ``[T, B, num_classes]``; ``time_first=True`` takes ``[T, B, ...]``."""
        x_seq = self._multi_step_input(x, time_first)
        return self._stateless(lambda: self._head(self._features(x_seq)))

    def forward_features(self, x: torch.Tensor, *, time_first: bool = False) -> torch.Tensor:
        """Features, ``[B, T, F]`` (``[T, B, F]`` with ``time_first=True``): what the head starts from (pooled and
        flattened; for the paper's networks with an MLP head, F is wider than :attr:`num_features`)."""
        x_seq = self._multi_step_input(x, time_first)
        features = self._stateless(lambda: self._features(x_seq))
        return features if time_first else features.transpose(0, 1)

    def forward_head(
        self, features: torch.Tensor, pre_logits: bool = False, *, time_first: bool = False
    ) -> torch.Tensor:
        """Features ``[B, T, F]`` (``[T, B, F]`` with ``time_first=True``) -> logits averaged over time
        ``[B, num_classes]``; ``pre_logits``: the classifier's input averaged over time instead
        (``[B, num_features]``)."""
        self._require_multi_step()
        if not isinstance(features, torch.Tensor) or features.dim() < 3:
            got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"{type(self).__name__}.forward_head expects features [B, T, F], got {got}")
        f_seq = features if time_first else features.transpose(0, 1)
        self._check_steps(f_seq.shape[0], features.shape, dim=0 if time_first else 1)
        return self._stateless(lambda: self._head(f_seq, pre_logits)).mean(0)

    def _features(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Time-first input ``[T, B, ...]`` -> pooled features ``[T, B, num_features]`` (state kept: internal)."""
        raise NotImplementedError

    def _head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Time-first features -> per-step logits (or the classifier's input when ``pre_logits``)."""
        return features if pre_logits else self.get_classifier()(features)

    def _require_multi_step(self) -> None:
        if self._step_mode != "m":
            raise RuntimeError(
                f"{type(self).__name__} is in streaming mode; call step(frame) per frame, or set_step_mode('m')"
            )

    def _multi_step_input(self, x: torch.Tensor, time_first: bool) -> torch.Tensor:
        self._require_multi_step()
        return self.to_time_first(x, time_first=time_first)

    def _stateless(self, run: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``run()`` between two resets of every neuron: nothing comes in from, or leaks out to, another call."""
        self.reset_states()
        try:
            return run()
        finally:
            self.reset_states()  # drop membrane states (and the graph they hold) between batches

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
        self._check_float(frame)
        self._check_channels(frame.shape[1], frame.shape)
        out = self._head(self._features(self._frame_input(frame)))
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
        """The classifier's input width (``forward_head(..., pre_logits=True)``; timm's ``head_hidden_size``): a new
        head is ``nn.Linear(model.num_features, n)``. ``forward_features``' width F may be larger (an MLP head)."""
        classifier = self.get_classifier()
        return classifier.in_features if isinstance(classifier, nn.Linear) else self._num_features

    def new_classifier(self, in_features: int) -> nn.Module:
        """The final layer for ``num_classes`` outputs: a fresh ``Linear(in_features, num_classes)``, or an identity
        for ``num_classes = 0`` (the model then returns features, timm's convention)."""
        self._num_features = in_features
        return nn.Linear(in_features, self.num_classes) if self.num_classes > 0 else nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final linear layer by a fresh one with ``num_classes`` outputs (0: identity), on the model's
        device and in its dtype."""
        _check_count(f"{type(self).__name__}.reset_classifier", "num_classes", num_classes, low=0)
        in_features = self.num_features
        self.num_classes = num_classes
        like = next(self.parameters(), None)
        new = self.new_classifier(in_features)
        if like is not None and not isinstance(like, nn.parameter.UninitializedParameter):
            new = new.to(device=like.device, dtype=like.dtype)
        parent_path, _, last = self.classifier_path.rpartition(".")
        parent: nn.Module = self
        for part in parent_path.split(".") if parent_path else []:
            parent = parent[int(part)] if part.isdigit() else getattr(parent, part)  # type: ignore[index]
        if last.isdigit():
            parent[int(last)] = new  # type: ignore[index]
        else:
            setattr(parent, last, new)

    @property
    def pretrained_info(self) -> Any:
        """The same as :attr:`pretrained_cfg` (the name this metadata had first)."""
        return self.pretrained_cfg

    @property
    def trained_neuron_spec(self) -> dict[str, Any]:
        """:attr:`neuron_spec` with learned neuron state that the spec only starts (the masked PSN's λ)."""
        masked = [m for m in self.modules() if isinstance(m, MaskedPSN)]
        return dict(self.neuron_spec) | ({"lambda_": float(masked[0].lambda_)} if masked else {})

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def neuron_layers(self) -> list[nn.Module]:
        return list(neurons_of(self))

    def extra_repr(self) -> str:
        return f"T={self.T}, neuron={self.neuron_spec}"
