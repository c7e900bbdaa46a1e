-- Event triggers need superuser; rewind init installs them when it can (see journal/schema.py).
DROP EVENT TRIGGER IF EXISTS rewind_ddl_end;
DROP EVENT TRIGGER IF EXISTS rewind_sql_drop;
CREATE EVENT TRIGGER rewind_ddl_end ON ddl_command_end EXECUTE FUNCTION rewind.on_ddl_end();
CREATE EVENT TRIGGER rewind_sql_drop ON sql_drop EXECUTE FUNCTION rewind.on_sql_drop();
