"""The Hydra configs, shipped inside the package as vit_rope.conf."""
