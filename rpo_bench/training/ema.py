"""An exponential moving average of the trained parameters (LoRA or full), the weights a run saves and evaluates
when --ema-decay is set (METHOD.md "EMA of the trained weights"); the reference stays the starting UNet.

The decay warms up as diffusers' EMAModel does by default, min(decay, (1 + n) / (10 + n)) at the n-th update, so
the average is not anchored to the starting weights for the first thousands of steps. The average is kept in the
parameters' own dtype; `applied()` swaps it into the module without copying, for saving and held-out evaluation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class EMA:
    def __init__(self, parameters: dict[str, torch.nn.Parameter], decay: float):
        self.parameters, self.decay, self.updates = parameters, decay, 0
        self.average = {name: p.detach().clone() for name, p in parameters.items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """After an optimizer step: average <- d * average + (1 - d) * parameter."""
        names = list(self.parameters)
        torch._foreach_lerp_([self.average[n] for n in names], [self.parameters[n].detach() for n in names],
                             1.0 - self.current_decay())
        self.updates += 1

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The module holds the average inside the block and its trained weights again after it."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    def _swap(self) -> None:
        for name, parameter in self.parameters.items():
            parameter.data, self.average[name] = self.average[name], parameter.data

    def state(self) -> tuple[dict[str, torch.Tensor], int]:
        return self.average, self.updates

    def load(self, average: dict[str, torch.Tensor], updates: int, where: str) -> None:
        from rpo_bench.core.errors import BadInputError  # noqa: PLC0415 - only a damaged checkpoint needs it

        if average.keys() != self.average.keys():
            raise BadInputError(f"checkpoint {where}: its EMA weights do not fit this model")
        with torch.no_grad():
            for name, tensor in average.items():
                if tensor.shape != self.average[name].shape:
                    raise BadInputError(f"checkpoint {where}: EMA weight {name} has shape {tuple(tensor.shape)}, "
                                        f"this model {tuple(self.average[name].shape)}")
                self.average[name].copy_(tensor)
        self.updates = updates
