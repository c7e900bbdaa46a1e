"""The journal's mirror off the database: what the decoding stream writes and `--journal` reads."""

from journal.mirror.reading import list_actions, list_gaps, row_history, show_action, tracked_ids, unknown_actions
from journal.mirror.store import Batch, Gap, MirrorStore, default_journal_url, normalize_url

__all__ = ["Batch", "Gap", "MirrorStore", "default_journal_url", "list_actions", "list_gaps", "normalize_url",
           "row_history", "show_action", "tracked_ids", "unknown_actions"]
