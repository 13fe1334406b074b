import pytest
import torch
import torch.nn.functional as F

from sds3d.cameras import look_at, make_cameras, orbit_cameras, sample_cameras, spherical_to_position
from sds3d.config import load_config


@pytest.fixture(scope="module")
def cameras_cfg():
    return load_config(prompt="x", overrides=["cameras.batch_size=512"]).cameras


def test_look_at_places_the_camera_and_points_minus_z_at_the_origin():
    position = torch.tensor([[1.0, 2.0, 3.0], [-2.0, 0.5, -1.0]])
    c2w = look_at(position)
    assert torch.allclose(c2w[:, :3, 3], position)
    assert torch.allclose(-c2w[:, :3, 2], F.normalize(-position, dim=-1), atol=1e-6)
    rotation = c2w[:, :3, :3]
    assert torch.allclose(rotation.transpose(1, 2) @ rotation, torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(2), atol=1e-6)  # right-handed
    assert torch.all(c2w[:, :3, 1][:, 2] > 0)  # the camera's up has a positive world-z component


def test_look_at_straight_down_is_finite_and_orthonormal():
    c2w = look_at(torch.tensor([[0.0, 0.0, 2.0]]))
    rotation = c2w[0, :3, :3]
    assert torch.isfinite(c2w).all()
    assert torch.allclose(rotation.T @ rotation, torch.eye(3), atol=1e-6)
    assert torch.allclose(-rotation[:, 2], torch.tensor([0.0, 0.0, -1.0]))


@pytest.mark.parametrize("width, height", [(5, 3), (7, 7)])
def test_centre_pixel_ray_points_at_the_origin(width, height):
    cams = make_cameras(torch.tensor([20.0]), torch.tensor([-60.0]), torch.tensor([2.5]), torch.tensor([45.0]), width, height)
    origins, dirs = cams.rays()
    assert origins.shape == dirs.shape == (1, height, width, 3)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(1, height, width))
    centre = dirs[0, height // 2, width // 2]
    assert torch.allclose(centre, F.normalize(-cams.position[0], dim=0), atol=1e-6)
    assert torch.allclose(origins[0, 0, 0], cams.position[0])


def test_rays_span_the_vertical_field_of_view():
    cams = make_cameras(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.0]), torch.tensor([60.0]), 1, 2)
    _, dirs = cams.rays()  # two pixels, centred at +-1/4 of the image height
    top, bottom = dirs[0, 0, 0], dirs[0, 1, 0]
    expected = torch.atan(torch.tan(torch.deg2rad(torch.tensor(30.0))) / 2)
    assert torch.atan2(top[2], -top[0]).item() == pytest.approx(expected.item(), abs=1e-5)  # row 0 is the top
    assert torch.atan2(bottom[2], -bottom[0]).item() == pytest.approx(-expected.item(), abs=1e-5)


def test_elevation_90_is_straight_up():
    p = spherical_to_position(torch.tensor([90.0]), torch.tensor([37.0]), torch.tensor([2.0]))
    assert torch.allclose(p, torch.tensor([[0.0, 0.0, 2.0]]), atol=1e-6)


@pytest.mark.parametrize("azimuth, expected", [(0.0, (3.0, 0.0, 0.0)), (90.0, (0.0, 3.0, 0.0)), (180.0, (-3.0, 0.0, 0.0))])
def test_azimuth_zero_is_plus_x_and_grows_towards_plus_y(azimuth, expected):
    p = spherical_to_position(torch.tensor([0.0]), torch.tensor([azimuth]), torch.tensor([3.0]))
    assert torch.allclose(p, torch.tensor([expected]), atol=1e-6)


def test_make_cameras_wraps_azimuth_into_minus_180_to_180():
    cams = make_cameras(torch.tensor([0.0, 0.0, 0.0]), torch.tensor([190.0, -190.0, 180.0]), torch.ones(3), torch.full((3,), 40.0), 2, 2)
    assert torch.allclose(cams.azimuth, torch.tensor([-170.0, 170.0, -180.0]))


def test_sample_cameras_respect_the_config_ranges(cameras_cfg):
    torch.manual_seed(0)
    cams = sample_cameras(cameras_cfg, width=8, height=6)
    assert len(cams) == 512 and (cams.width, cams.height) == (8, 6)

    def within(values, bounds, tol=1e-4):
        return bool(((values >= bounds[0] - tol) & (values <= bounds[1] + tol)).all())

    assert within(cams.elevation, cameras_cfg.elevation_range)
    assert within(cams.azimuth, cameras_cfg.azimuth_range)
    assert within(cams.distance, cameras_cfg.distance_range)
    assert within(cams.fovy, cameras_cfg.fovy_range)
    assert torch.allclose(cams.position.norm(dim=-1), cams.distance, atol=1e-5)
    assert within(cams.light_position.norm(dim=-1) / cams.distance, cameras_cfg.light_distance_range)


def test_sample_cameras_position_matches_its_angles(cameras_cfg):
    torch.manual_seed(1)
    cams = sample_cameras(cameras_cfg, width=4, height=4)
    p = cams.position
    elevation = torch.rad2deg(torch.asin(p[:, 2] / p.norm(dim=-1)))
    azimuth = torch.rad2deg(torch.atan2(p[:, 1], p[:, 0]))
    assert torch.allclose(elevation, cams.elevation, atol=1e-3)
    assert torch.allclose(torch.remainder(azimuth - cams.azimuth + 180.0, 360.0) - 180.0, torch.zeros(len(cams)), atol=1e-3)


def test_orbit_cameras_are_evenly_spaced_at_the_eval_settings(cameras_cfg):
    cams = orbit_cameras(cameras_cfg, count=6, resolution=9)
    assert len(cams) == 6
    azimuths = torch.cat([c.azimuth for c in cams])
    assert torch.allclose(torch.diff(azimuths), torch.full((5,), 60.0), atol=1e-4)
    assert azimuths[0].item() == pytest.approx(-180.0)
    for cam in cams:
        assert len(cam) == 1 and cam.width == cam.height == 9
        assert cam.elevation.item() == pytest.approx(cameras_cfg.eval_elevation)
        assert cam.distance.item() == pytest.approx(cameras_cfg.eval_distance)
        assert cam.fovy.item() == pytest.approx(cameras_cfg.eval_fovy)


def test_camera_features_name_the_view_and_unknown_is_zero():
    from sds3d.cameras import CAMERA_FEATURES, camera_features

    cameras = make_cameras(torch.tensor([0.0, 90.0]), torch.tensor([90.0, 0.0]), torch.tensor([1.75, 2.0]),
                           torch.tensor([55.0, 40.0]), 8, 8)
    features = camera_features(cameras)
    assert features.shape == (2, CAMERA_FEATURES)
    torch.testing.assert_close(features[0], torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]), atol=5e-3, rtol=0)
    assert features[1, 1] > 0.99 and features[1, 5] == pytest.approx(1.0) and features[1, 6] < 0  # overhead, far, narrow
    assert torch.equal(camera_features(None, batch=3), torch.zeros(3, CAMERA_FEATURES))
