"""sbrtplan.phantoms (under construction)."""
