"""Undo planning, conflict detection, applying, and point-in-time restore of tracked tables."""

from restore.planner import UNDO_ACTOR, Conflict, Plan, Policy
from restore.undo import DEFAULT_MAX_ROWS, UndoResult, preview, restore_to, undo

__all__ = ["DEFAULT_MAX_ROWS", "UNDO_ACTOR", "Conflict", "Plan", "Policy", "UndoResult", "preview",
           "restore_to", "undo"]
