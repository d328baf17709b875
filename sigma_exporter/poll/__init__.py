"""Per-target state and the scheduler; publishes one immutable view per generation."""
