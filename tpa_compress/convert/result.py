"""What a conversion returns, whichever path ran it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..layout import LayerLayout
from .layer import LayerReport


@dataclass
class ConversionResult:
    layouts: list[LayerLayout]
    layers: list[LayerReport]
    totals: dict
    perplexity: dict = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what the log noted, kept in the report
    heal: dict = field(default_factory=dict)  # the healing stage's report (heal.py), when the recipe heals
    profile: dict = field(default_factory=dict)  # time per layer, peak memory (stream.py); not in the report
