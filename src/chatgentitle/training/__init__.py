"""LoRA fine-tuning: config (TrainConfig), examples (data and collation), watch (callbacks, plots),
loop (the run)."""
