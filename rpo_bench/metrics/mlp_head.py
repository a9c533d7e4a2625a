"""The MLP head of the LAION improved aesthetic predictor, which ImageReward reuses on BLIP features.

Linear 768->1024->128->64->16->1 with dropouts and no activations, exactly as both official repositories define
it; the state-dict keys (`layers.0`, `layers.2`, `layers.4`, `layers.6`, `layers.7`) are theirs. The input size
is read from the weights, so the tiny variants use the same class at a smaller width.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

HIDDEN = (1024, 128, 64, 16)


class PreferenceMLP(nn.Module):
    def __init__(self, input_size: int = 768, hidden: tuple[int, ...] = HIDDEN):
        super().__init__()
        a, b, c, d = hidden
        self.layers = nn.Sequential(
            nn.Linear(input_size, a), nn.Dropout(0.2),
            nn.Linear(a, b), nn.Dropout(0.2),
            nn.Linear(b, c), nn.Dropout(0.1),
            nn.Linear(c, d),
            nn.Linear(d, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)

    @classmethod
    def sized_for(cls, state: Mapping[str, torch.Tensor], prefix: str = "layers.") -> PreferenceMLP:
        """An MLP whose widths match the checkpoint (768 input in the official files)."""
        widths = [state[f"{prefix}{i}.weight"].shape for i in (0, 2, 4, 6) if f"{prefix}{i}.weight" in state]
        if len(widths) != 4:
            return cls()  # the key check that follows names what is missing
        return cls(int(widths[0][1]), tuple(int(w[0]) for w in widths))
