"""sbrtplan.protocols (under construction)."""
