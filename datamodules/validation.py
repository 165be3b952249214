"""The check every event sample passes where it enters the pipeline, before anything turns it into frames.

A recording is only data: a damaged or hostile file must never become a plausible-looking sample. Tonic's readers
and ``ToFrame`` accept, without a word, events that make no sense:

- ``x = -1`` indexes the last column (numpy's negative indexing): the event lands on the opposite edge;
- a polarity of 5 in DVS128 Gesture's ``.npy`` is cast to ``bool`` (ON); ``-1`` indexes the ON channel;
- decreasing timestamps, or one timestamp for every event, give all-zero frames with ``n_time_bins``; so does a
  recording spanning fewer µs than there are frames (``n_time_bins``), or holding fewer events (``n_event_bins``);
- NaN or infinite values in float files (SHD's times, ``.mat`` or ``.npy`` doubles) turn into arbitrary integers.

:class:`ValidEvents` is the first step of every event DataModule's preprocessing
(:meth:`psn_zoo.datamodules.base.EventDataModule.preprocessing`). It sees the values *as stored*: the DataModule widens
the reader's ``dtype`` to float64 (:func:`widened`), so no cast can hide a bad value, checks them with a few
vectorised passes, and casts them back to Tonic's own ``dtype``, so a valid file yields exactly what Tonic yields.
A violation raises :class:`InvalidEvents`, which :class:`psn_zoo.datamodules.errors.NamedErrors` reports as a
:class:`psn_zoo.datamodules.errors.CorruptSampleError` naming the file and the problem.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: Values a float64 holds exactly as integers; a timestamp beyond this (285 years in µs) is not a recording.
MAX_EXACT = 2**53


class InvalidEvents(ValueError):
    """The events of one recording break the rules of their format; the message says which event and how."""


def widened(dtype: np.dtype) -> np.dtype:
    """The same fields as float64: every integer a file can hold below 2**53, plus NaN and inf, survives."""
    return np.dtype([(name, np.float64) for name in dtype.names])


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def _show(value: float | int | bool) -> str:
    value = value.item() if isinstance(value, np.generic) else value
    return repr(int(value)) if isinstance(value, float) and np.isfinite(value) and value == int(value) else repr(value)


@dataclasses.dataclass(frozen=True)
class ValidEvents:
    """Refuse a recording unless every event is inside the sensor, has an allowed polarity, finite values and
    non-decreasing timestamps. It must also span at least ``bins`` µs with ``time_bins`` (frames of equal duration),
    or hold at least ``bins`` events without (frames of equal event count): else ``ToFrame`` makes only empty frames.

    Args:
        width: sensor width; ``0 <= x < width``.
        height: sensor height; ``0 <= y < height`` (ignored for events without ``y``, e.g. SHD's channels).
        polarities: the polarity values the format allows.
        time_bins: frames are binned by time, so a recording whose events share one timestamp has no frames.
        dtype: Tonic's event ``dtype``: events read with :func:`widened` fields are cast back to it.
        bins: the frames ``ToFrame`` makes of a recording (``T``). Not stored in a transform spec: the ``ToFrame``
            after it states it (:func:`psn_zoo.datamodules.transform_spec.build_transform` links them).
    """

    width: int
    height: int
    polarities: tuple[int, ...] = (0, 1)
    time_bins: bool = True
    dtype: np.dtype | None = dataclasses.field(default=None, repr=False, compare=False)
    bins: int = dataclasses.field(default=1, metadata={"stored": False})

    def __call__(self, events: np.ndarray) -> np.ndarray:
        self.check(events)
        if self.dtype is not None and events.dtype != self.dtype and events.dtype == widened(self.dtype):
            return events.astype(self.dtype)
        return events

    def check(self, events: np.ndarray) -> None:
        names = events.dtype.names
        if not names or not {"x", "t", "p"} <= set(names):
            raise InvalidEvents(f"expected structured events with fields x, t, p, got dtype {events.dtype}")
        events = events.reshape(-1)
        n = len(events)
        if n == 0:
            raise InvalidEvents("the recording holds no events (empty or truncated file)")
        # fast path: a few reductions per field; the masks that locate a problem are built only on failure
        for name in names:
            column = events[name]
            if column.dtype.kind == "f" and not np.isfinite(column.sum()):  # NaN or inf anywhere makes the sum so
                bad = ~np.isfinite(column)
                if bad.any():
                    i = _first(bad)
                    raise InvalidEvents(f"event {i} of {n}: {name} = {_show(column[i])} is not a finite number")
        for name, size in (("x", self.width), ("y", self.height)):
            if name not in names:
                continue
            column = events[name]
            fractional = column.dtype.kind == "f" and not (column == np.floor(column)).all()
            if fractional or column.min() < 0 or column.max() >= size:
                outside = (column < 0) | (column >= size)
                if column.dtype.kind == "f":
                    outside |= column != np.floor(column)
                i = _first(outside)
                raise InvalidEvents(
                    f"event {i} of {n}: {name} = {_show(column[i])} lies outside the {self.width}×{self.height} "
                    f"sensor (pixel coordinates 0 ≤ {name} < {size}); {int(outside.sum())} such events"
                )
        polarity = events["p"]
        if polarity.dtype.kind != "b":  # a bool is 0 or 1 by construction
            low, high = polarity.min(), polarity.max()
            contiguous = set(self.polarities) == set(range(min(self.polarities), max(self.polarities) + 1))
            integral = polarity.dtype.kind != "f" or (polarity == np.floor(polarity)).all()
            if not (contiguous and integral and low >= min(self.polarities) and high <= max(self.polarities)):
                bad = np.ones(n, dtype=bool)
                for allowed in self.polarities:
                    bad &= polarity != allowed
                if bad.any():
                    i = _first(bad)
                    raise InvalidEvents(
                        f"event {i} of {n}: polarity p = {_show(polarity[i])} is not one of the format's values "
                        f"{set(self.polarities)}; {int(bad.sum())} such events"
                    )
        t = events["t"]
        if t.dtype.kind in "if" and t.min() < 0:
            i = _first(t < 0)
            raise InvalidEvents(f"event {i} of {n}: timestamp t = {_show(t[i])} µs is negative")
        if t.max() > MAX_EXACT:
            i = _first(t > MAX_EXACT)
            raise InvalidEvents(f"event {i} of {n}: timestamp t = {_show(t[i])} µs is beyond 2**53 µs")
        decrease = t[1:] < t[:-1]  # not np.diff: unsigned timestamps would wrap around
        if decrease.any():
            i = _first(decrease) + 1
            raise InvalidEvents(
                f"timestamps decrease: event {i} of {n} has t = {_show(t[i])} µs after t = {_show(t[i - 1])} µs "
                f"({int(decrease.sum())} decreases; timestamps must be non-decreasing)"
            )
        if self.time_bins and t[-1] == t[0]:
            raise InvalidEvents(
                f"all {n} events share one timestamp (t = {_show(t[0])} µs): the recording spans no time, so "
                "frames binned by time (n_time_bins) would be empty"
            )
        if self.time_bins:
            span = int(np.floor(t[-1])) - int(np.floor(t[0]))  # what Tonic's integer timestamps span
            if span < self.bins:
                raise InvalidEvents(
                    f"the recording spans {span} µs (t = {_show(t[0])} … {_show(t[-1])} µs), less than T={self.bins}: "
                    f"frames binned by time (n_time_bins={self.bins}) would all be empty"
                )
        elif n < self.bins:
            raise InvalidEvents(
                f"the recording holds {n} events, fewer than T={self.bins}: frames of equal event count "
                f"(n_event_bins={self.bins}) would all be empty"
            )
