"""Models on disk: loading (base models, GGUF conversion, adapters, dtypes) and run_dir (a run's files)."""
