"""The least any Python consumer of Rewind's stream does: read it and decode it, nothing more.

`capture_overhead.py --mode stream --reference` runs this beside `rewind serve` and pg_recvlogical,
each on a database of its own with the same stream-mode capture. It reads the slot through
psycopg2's replication protocol with the sidecar's publications and options
(journal.replication.open_stream), decodes every payload with journal.pgoutput (the rows' values
included, which stream mode must journal), and confirms what it has read: it journals nothing into
the database and mirrors nothing. It wakes up as the sidecar's stream does (after reading what had
arrived it waits before reading again), so the two differ only in the work after decoding.

    .venv/bin/python bench/decode_only.py DSN SLOT      # until SIGTERM
"""

from __future__ import annotations

import select
import sys
import time
from collections.abc import Sequence

from journal.pgoutput import Commit, Decoder
from journal.replication import JOURNAL_PUBLICATIONS, TABLES_PUBLICATION, open_stream
from journal.stream import _DRAIN_PAUSE


def consume(dsn: str, slot: str) -> None:
    stream = open_stream(dsn, slot, start_lsn=0, publications=(*JOURNAL_PUBLICATIONS, TABLES_PUBLICATION),
                         status_interval=1.0)
    read, decode = stream.cursor.read_message, Decoder().decode
    read_to = 0  # end of the last commit read, confirmed once nothing more has arrived
    drained, drain_started = False, 0.0
    while True:
        msg = read()
        if msg is None:
            if read_to:
                stream.confirm(read_to)
                read_to = 0
            if drained:
                drained = False
                if time.monotonic() - drain_started < _DRAIN_PAUSE:
                    time.sleep(_DRAIN_PAUSE)
                drain_started = time.monotonic()
                continue
            drained = bool(select.select([stream], [], [], 0.1)[0])
            drain_started = time.monotonic()
            continue
        drained = True
        m = decode(msg.payload)
        if isinstance(m, Commit):
            read_to = m.end_lsn


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 2:
        print("usage: decode_only.py DSN SLOT", file=sys.stderr)
        return 2
    consume(args[0], args[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
