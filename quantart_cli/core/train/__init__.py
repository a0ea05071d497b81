"""The one training loop both stages share, and what it is made of (tasks, resume, DDP, signals)."""
