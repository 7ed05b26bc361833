"""DMoE: group languages by parameter deviation, then scale selected layers into group experts."""
