"""sbrtplan.io (under construction)."""

from .ctwrite import write_ct_series
from .rtexport import write_rtdose, write_rtstruct
from .rtplan import read_rtplan, write_rtplan
