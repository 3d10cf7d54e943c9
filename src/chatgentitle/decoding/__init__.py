"""How titles are decoded: options (GenerationOptions and its mode), search (beam search, sampling,
the dispatch), shared_prefix (one prompt cache for all beams), steering (phrases, a length)."""
