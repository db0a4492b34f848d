"""Evaluation of trained or grown checkpoints: perplexity and bits per byte on held-out text,
and downstream tasks through lm-evaluation-harness (offline task set shipped in assets/eval)."""
