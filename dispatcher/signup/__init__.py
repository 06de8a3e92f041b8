"""Signing up by double opt-in, and asking for one's preference link: the public forms."""
