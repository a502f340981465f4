"""Inference: a trained network with its preprocessing, from a checkpoint or shipped weights; evaluation,
prediction on image files, class confidence maps, export. Nothing here imports the training package."""
