"""A person's rights over their data: access (export), erasure, and retention windows."""
