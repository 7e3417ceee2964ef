"""The run folder: its paths, table schemas, atomic writes, state, provenance, how it is named and
prepared, and one read of it for the report. No Ray in here."""
