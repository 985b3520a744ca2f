"""The training loop's progress on stderr: step, loss, throughput, elapsed and ETA (tunelab.progress: a rich bar on
a terminal, plain lines every few seconds in a log)."""

from __future__ import annotations

from tunelab.progress import Steps


class TrainProgress(Steps):
    def __init__(self, total: int, enabled: bool = True) -> None:
        super().__init__("train", total, "steps", enabled, loss="-", **{"tok/s": "-"})

    def update(self, done: int, loss: float | None = None, tokens_per_s: float | None = None) -> None:  # type: ignore[override]
        fields = {}
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
        if tokens_per_s is not None:
            fields["tok/s"] = f"{tokens_per_s:,.0f}"
        super().update(done, **fields)
