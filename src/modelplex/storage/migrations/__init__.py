"""Schema migrations, in order, one module per SQL backend. Migration n (1-based) takes a schema
from version n-1 to n; a store applies the missing ones when it opens, and records the version in
a `schema_version` table. Never edit a released migration: append a new one."""
