"""Process sharding for evaluation: under torchrun / accelerate launch every process takes every n-th item.

Outside a launcher this is a single process and nothing from accelerate is initialised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class ProcessContext:
    rank: int = 0
    world_size: int = 1
    device: str | None = None  # the launcher's device for this process, when it assigns one
    _state: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        return items[self.rank::self.world_size]

    def barrier(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()


def process_context(device: str) -> ProcessContext:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ProcessContext()
    import torch  # noqa: PLC0415 - torch loads in seconds: on first use
    from accelerate import PartialState  # noqa: PLC0415 - accelerate loads in seconds: on first use

    cpu_only = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    state = PartialState(cpu=cpu_only)
    assigned = str(state.device) if device == "auto" else None  # one GPU per process, as the launcher says
    return ProcessContext(state.process_index, state.num_processes, assigned, state)
