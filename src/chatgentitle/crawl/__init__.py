"""Harvesting new arXiv papers: http (the one polite HTTP client), formats (OAI-PMH, Atom, RSS),
harvest (resumable crawls into the store)."""
