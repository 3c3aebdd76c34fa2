"""Orbax checkpoints of the training state: the latest (for resuming) and the best (by validation DSC).

The state is a pytree {"params", "opt_state", "key", "meta"} with meta = [completed steps,
validations done, best DSC]. Orbax writes each checkpoint to a temporary folder and renames it, so
a process killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp


def managers(out_dir: str | Path) -> tuple[ocp.CheckpointManager, ocp.CheckpointManager]:
    """(latest, best) CheckpointManagers under out_dir/checkpoints/{latest,best}."""
    root = Path(out_dir).resolve() / "checkpoints"
    latest = ocp.CheckpointManager(root / "latest", options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False))
    best = ocp.CheckpointManager(
        root / "best",
        options=ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m["val_dice"], best_mode="max", enable_async_checkpointing=False),
    )
    return latest, best


def save(manager: ocp.CheckpointManager, step: int, state: dict[str, Any], metrics: dict[str, float] | None = None) -> None:
    """Save the state pytree at `step` (blocking)."""
    manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)
    manager.wait_until_finished()


def restore_latest(manager: ocp.CheckpointManager, like: dict[str, Any]) -> dict[str, Any] | None:
    """The newest saved state shaped like `like`, or None when there is no checkpoint."""
    step = manager.latest_step()
    if step is None:
        return None
    return manager.restore(step, args=ocp.args.StandardRestore(like))
