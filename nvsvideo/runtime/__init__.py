"""How the models run on a device: batch sizes, numeric precision, optional compilation."""
