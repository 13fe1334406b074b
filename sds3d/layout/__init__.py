"""Layouts for compositional scenes (objects and parts in boxes, each with a prompt) and the optional
planner that asks a chat model for one."""

from sds3d.layout.planner import plan_layout
from sds3d.layout.spec import Box, Layout, LayoutObject, Part, Region, load_layout, parse_layout

__all__ = ["Box", "Layout", "LayoutObject", "Part", "Region", "load_layout", "parse_layout", "plan_layout"]
