"""sbrtplan.dose_engine (under construction)."""
