"""Papers and their files: records (Paper, JSON lines, atomic writes), prepare (snapshot -> splits),
store (the crawl's SQLite), prompt (the instruction format training and inference share)."""
