"""Work over many inputs: photos, videos, evaluation, crack-free material."""
