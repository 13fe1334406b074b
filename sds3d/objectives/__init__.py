"""The objective registry: one line per objective, name -> class (the class docstring's first line
is its description in `sds3d configs`)."""

from sds3d.objectives.sds import SDS

OBJECTIVES = {
    "sds": SDS,
}


def build_objective(config):
    return OBJECTIVES[config.name](config)


def describe(name: str) -> str:
    return (OBJECTIVES[name].__doc__ or "").strip().splitlines()[0]
