"""The objective registry: one line per objective, name -> class (the class docstring's first line
is its description in `sds3d configs`)."""

from sds3d.objectives.bsd import BSD
from sds3d.objectives.csd import CSD
from sds3d.objectives.csm import CSM
from sds3d.objectives.ism import ISM
from sds3d.objectives.nfsd import NFSD
from sds3d.objectives.semantic import SemanticSDS
from sds3d.objectives.sds import SDS
from sds3d.objectives.sjc import SJC
from sds3d.objectives.vsd import VSD

OBJECTIVES = {
    "sds": SDS,
    "sjc": SJC,
    "vsd": VSD,
    "csd": CSD,
    "nfsd": NFSD,
    "ism": ISM,
    "bsd": BSD,
    "csm": CSM,
    "semantic": SemanticSDS,
}


def build_objective(config, guide, total_steps: int):
    """``config`` is the ``objective`` section; stateful objectives (VSD) attach to the guide here."""
    return OBJECTIVES[config.name](config, guide, total_steps)


def describe(name: str) -> str:
    return (OBJECTIVES[name].__doc__ or "").strip().splitlines()[0]
