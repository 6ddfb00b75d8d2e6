"""Training and evaluation code (not imported by the node at run time)."""
