"""Inpainting: Fooocus mask maths, crop/fill/composite, inpaint engine files (head + patch)."""
