"""The journal's mirror off the database: what the decoding stream writes and `--journal` reads.

The names load on first use (PEP 562): SQLAlchemy and Alembic take a quarter of a second to
import, and most `rewind` commands never touch the mirror.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from journal.mirror.reading import list_actions, list_gaps, row_history, show_action, tracked_ids, unknown_actions
    from journal.mirror.store import Batch, Gap, MirrorStore, default_journal_url, normalize_url

_HOME = {**dict.fromkeys(["list_actions", "list_gaps", "row_history", "show_action", "tracked_ids",
                          "unknown_actions"], "reading"),
         **dict.fromkeys(["Batch", "Gap", "MirrorStore", "default_journal_url", "normalize_url"], "store")}

__all__ = ["Batch", "Gap", "MirrorStore", "default_journal_url", "list_actions", "list_gaps", "normalize_url",
           "row_history", "show_action", "tracked_ids", "unknown_actions"]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'journal.mirror' has no attribute {name!r}")
    return getattr(import_module(f"journal.mirror.{_HOME[name]}"), name)
