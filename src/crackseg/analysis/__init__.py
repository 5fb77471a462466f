"""What masks say: crack measurements, severity classes, crack types, pixel metrics."""
