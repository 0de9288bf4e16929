"""An exponential moving average (EMA) of a model's weights, for ``imlscan train --ema``.

Late in training, at a constant or slowly falling learning rate, each step's weights are a noisy
sample around the point the optimizer is circling; an average of many recent steps often sits
nearer that point than any one of them (Polyak averaging). The average is a second copy of the
model that never trains: after every applied update each floating-point tensor (weights and
BatchNorm statistics) moves ``1 - decay`` of the way towards the trained model's, integer buffers
are copied. ``1 / (1 - decay)`` steps is its horizon: 0.998 averages about the last 500.
"""

from __future__ import annotations

import copy

import torch


class WeightAverage:
    """The averaged copy of ``model``; it starts equal to it (so a run from ``--init`` starts
    averaging from those weights) and is never in training mode."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be between 0 and 1, got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One step: ``avg = decay * avg + (1 - decay) * model`` for every floating-point tensor."""
        mine = self.model.state_dict()
        floats_avg, floats_new = [], []
        for name, t in model.state_dict().items():
            a = mine[name]
            if a.is_floating_point():
                floats_avg.append(a)
                floats_new.append(t.detach().to(a.dtype))
            else:
                a.copy_(t)
        if floats_avg:
            torch._foreach_lerp_(floats_avg, floats_new, 1.0 - self.decay)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
