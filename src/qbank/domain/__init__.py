"""Pure code, no I/O: item schema and id rules, filters and their escaping, fusion, duplicate grouping.

Everything else may import it; it imports nothing of ours but itself."""
