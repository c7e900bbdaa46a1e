-- The journal, version 3: one BRIN index over (tx, pos) instead of one per column. Each index
-- is opened and maintained by every journaling statement, which on one-row OLTP statements was
-- measurable (about 2 us per index per statement); a multi-column minmax BRIN still narrows a
-- scan by either column alone.
DROP INDEX IF EXISTS rewind.change_pos_brin;
DROP INDEX IF EXISTS rewind.change_tx_brin;
CREATE INDEX IF NOT EXISTS change_tx_pos_brin ON rewind.change USING brin (tx, pos);
