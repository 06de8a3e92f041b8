"""Operations: health and readiness, doctor checks, logging set-up, metrics."""
