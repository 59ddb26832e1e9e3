"""Results become pictures and tables: plots (matplotlib, optional), terminal charts and tables, CSV.
Everything here reads a saved result (dict/JSON) and never recomputes one."""
