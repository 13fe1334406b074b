"""The optimised scene of the mesh stage: a fixed-topology triangle mesh with learnable vertex offsets
and a texture field, both started from the NeRF stage (its surface and its albedo)."""

from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import trimesh

from sds3d.errors import ExportError
from sds3d.scene.hashgrid import HashGridEncoding
from sds3d.scene.nerf import NeRFField, code_inputs, mlp, with_codes


class TextureField(nn.Module):
    """Albedo [N, 3] in [0, 1] at points [N, 3] of the cube [-radius, radius]^3: a hash grid and an MLP,
    shaped like the NeRF field's albedo branch so that ``from_nerf`` can copy it (with the region codes of
    a field of separate objects, or a generated field's prompt code, as the network's extra inputs)."""

    def __init__(self, cfg, input_codes: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        super().__init__()
        self.radius, self.input_codes = cfg.radius, input_codes
        self.encoding = HashGridEncoding.from_config(cfg.encoding)
        self.network = mlp(self.encoding.n_output_dims + code_inputs(input_codes), 3, cfg.mlp_width, cfg.mlp_layers)

    @classmethod
    def from_nerf(cls, field: NeRFField) -> "TextureField":
        """The NeRF field's albedo exactly: its grid and hidden layers, and the albedo rows of its last layer."""
        texture = cls(field.cfg, field.input_codes)
        texture.encoding.load_state_dict(field.encoding.state_dict())
        state = field.network.state_dict()
        last = len(field.network) - 1
        state[f"{last}.weight"], state[f"{last}.bias"] = state[f"{last}.weight"][1:], state[f"{last}.bias"][1:]
        texture.network.load_state_dict(state)
        return texture

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        unit = (points / self.radius + 1.0) / 2.0  # [N, 3] in [0, 1]
        return torch.sigmoid(self.network(with_codes(self.encoding(unit), self.input_codes, points)).float())


class MeshScene(nn.Module):
    """vertices = base + offsets over fixed faces; albedo from the texture field at surface points.

    Regularisers: ``laplacian_loss`` (uniform Laplacian, mean squared distance of each vertex from the
    mean of its neighbours) and ``normal_consistency_loss`` (mean 1 - cos between adjacent faces' normals).
    """

    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor, texture: TextureField):
        super().__init__()
        if len(faces) == 0 or len(vertices) == 0:
            raise ExportError("the mesh to refine is empty (no faces)",
                              hint="the NeRF run has no surface at this threshold; train it longer or set export.threshold")
        topology = trimesh.Trimesh(vertices.detach().cpu().numpy(), faces.cpu().numpy(), process=False)
        self.register_buffer("base_vertices", vertices.float())
        self.register_buffer("faces", faces.long())
        self.register_buffer("edges", torch.tensor(np.asarray(topology.edges_unique), dtype=torch.long), persistent=False)
        self.register_buffer("face_pairs", torch.tensor(np.asarray(topology.face_adjacency), dtype=torch.long), persistent=False)
        self.offsets = nn.Parameter(torch.zeros_like(self.base_vertices))
        self.texture = texture

    def geometry(self):
        return self.base_vertices + self.offsets, self.faces

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        return self.texture(points)

    def update_step(self, step: int) -> None:
        """Nothing to schedule: the texture keeps every hash-grid level the NeRF stage unlocked."""

    def laplacian_loss(self) -> torch.Tensor:
        vertices = self.geometry()[0]
        a, b = self.edges.unbind(1)
        summed = torch.zeros_like(vertices).index_add(0, a, vertices[b]).index_add(0, b, vertices[a])
        ends = self.edges.reshape(-1)
        degree = torch.zeros_like(vertices[:, 0]).index_add(0, ends, torch.ones_like(ends, dtype=vertices.dtype))
        return ((vertices - summed / degree.clamp(min=1)[:, None]) ** 2).sum(-1).mean()

    def normal_consistency_loss(self) -> torch.Tensor:
        if len(self.face_pairs) == 0:
            return self.offsets.sum() * 0.0
        a, b, c = self.geometry()[0][self.faces].unbind(1)
        normals = F.normalize(torch.cross(b - a, c - a, dim=-1), dim=-1)
        return (1.0 - (normals[self.face_pairs[:, 0]] * normals[self.face_pairs[:, 1]]).sum(-1)).mean()

    def to_trimesh(self) -> trimesh.Trimesh:
        """The current mesh in the scene frame (no colours)."""
        vertices, faces = self.geometry()
        return trimesh.Trimesh(vertices.detach().cpu().numpy(), faces.cpu().numpy(), process=False)
