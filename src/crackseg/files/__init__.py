"""Files crackseg reads and writes: images, checkpoints, the shipped weights."""
