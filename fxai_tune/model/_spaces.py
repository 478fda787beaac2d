"""gymnasium spaces as plain dicts, so a checkpoint's hyperparameters rebuild the policy.

Lightning stores ``hparams`` in the checkpoint and in ``hparams.yaml``; checkpoints are read
with ``weights_only=True``, which admits plain containers but no pickled ``Space`` objects.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["space_from_dict", "space_to_dict"]


def _bound(values: np.ndarray) -> float | list:
    """One number where the bound is the same everywhere (the usual case), else nested lists."""
    flat = values.ravel()
    if flat.size and (flat == flat[0]).all():
        return float(flat[0])
    return values.tolist()


def space_to_dict(space: gym.Space) -> dict[str, Any]:
    """A ``Box``, ``Discrete`` or ``Dict`` (of those) as a dict of plain values.

    Example:
        >>> space_to_dict(gym.spaces.Discrete(3))
        {'type': 'Discrete', 'n': 3, 'start': 0}
    """
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "low": _bound(space.low),
            "high": _bound(space.high),
            "dtype": str(space.dtype),
        }
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_dict(s) for k, s in space.spaces.items()}}
    raise TypeError(f"cannot serialise {space!r}; supported: Box, Discrete, Dict")


def space_from_dict(data: dict[str, Any]) -> gym.Space:
    """The space `space_to_dict` described (entry order of a ``Dict`` kept).

    Example:
        >>> space_from_dict(space_to_dict(gym.spaces.Box(-1, 1, (2,))))
        Box(-1.0, 1.0, (2,), float32)
    """
    kind = data.get("type")
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        shape = tuple(data["shape"])
        low = np.broadcast_to(np.asarray(data["low"], dtype=dtype), shape)
        high = np.broadcast_to(np.asarray(data["high"], dtype=dtype), shape)
        return gym.spaces.Box(low, high, shape, dtype)
    if kind == "Discrete":
        return gym.spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
    if kind == "Dict":
        return gym.spaces.Dict({k: space_from_dict(v) for k, v in data["spaces"].items()})
    raise ValueError(f"unknown space type {kind!r}; valid: 'Box', 'Discrete', 'Dict'")
