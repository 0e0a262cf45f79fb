"""Reference SViTs that autocompress trains itself on embedded data (the demo's model)."""

from autocompress.reference.recipes import REFERENCES, ReferenceRecipe, get_recipe

__all__ = ["REFERENCES", "ReferenceRecipe", "get_recipe"]
