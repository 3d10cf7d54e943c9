"""The one titling path: generator (TitleGenerator, titles()), ranking (candidate scores, spread,
verdict), remote (OpenAI-compatible engines), sources (which source a command uses), files (batch files)."""
