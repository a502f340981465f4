"""`nin bench`: our training and inference speed against a plain PyTorch port, in the same process."""
