"""Training (SAM/AdamW, EMA, early stopping, atomic checkpoints) and evaluation."""
