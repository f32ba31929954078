"""ScaleMultiViewImage keeps the projections consistent with the resized images (hand-computed pinhole numbers)."""
import numpy as np
import pytest

from projects.bevformer.bevformer.transforms import ScaleMultiViewImage

# one camera at the lidar origin looking along lidar +x; optical frame x right (= -y lidar), y down (= -z lidar)
FOCAL, CX, CY = 200.0, 160.0, 90.0  # 320 x 180 image
LIDAR2CAM = np.array([[0.0, -1.0, 0.0, 0.0],
                      [0.0, 0.0, -1.0, 0.0],
                      [1.0, 0.0, 0.0, 0.0],
                      [0.0, 0.0, 0.0, 1.0]])
CAM2IMG = np.array([[FOCAL, 0.0, CX, 0.0], [0.0, FOCAL, CY, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
POINT = np.array([10.0, 2.0, 0.5, 1.0])  # lidar frame: 10 m ahead, 2 m left, 0.5 m up
# u = CX + FOCAL * (-2) / 10 = 120, v = CY + FOCAL * (-0.5) / 10 = 80
U, V = 120.0, 80.0


def project(lidar2img: np.ndarray, point: np.ndarray) -> np.ndarray:
    p = lidar2img @ point
    return p[:2] / p[2]


def results_for(images, n_cam=2):
    return dict(img=[im.copy() for im in images] * (n_cam // len(images)),
                lidar2img=np.stack([CAM2IMG @ LIDAR2CAM] * n_cam),
                cam2img=np.stack([CAM2IMG] * n_cam), img_shape=images[0].shape[:2])


def test_projection_before_resize_is_the_hand_computed_pixel():
    np.testing.assert_allclose(project(CAM2IMG @ LIDAR2CAM, POINT), [U, V], atol=1e-9)


@pytest.mark.parametrize('scale, new_hw', [(0.5, (90, 160)), (0.8, (144, 256)), (0.3, (54, 96)), (1.0, (180, 320))])
def test_point_keeps_its_relative_pixel(scale, new_hw):
    out = ScaleMultiViewImage(scale)(results_for([np.zeros((180, 320, 3), np.float32)]))
    assert out['img_shape'] == new_hw and out['pad_shape'] == new_hw
    assert all(im.shape == new_hw + (3, ) for im in out['img'])
    for cam in range(2):
        u, v = project(out['lidar2img'][cam], POINT)
        assert u / new_hw[1] == pytest.approx(U / 320.0, abs=1e-12)
        assert v / new_hw[0] == pytest.approx(V / 180.0, abs=1e-12)
        # cam2img scaled the same way: fx' = fx * W'/W, cy' = cy * H'/H
        k = out['cam2img'][cam]
        assert k[0, 0] == pytest.approx(FOCAL * new_hw[1] / 320) and k[1, 2] == pytest.approx(CY * new_hw[0] / 180)


def test_rounded_size_uses_per_axis_factors():
    # 225 x 400 at 0.3 -> round(67.5) = 68 rows, 120 columns: the y factor is 68/225, not 0.3
    out = ScaleMultiViewImage(0.3)(results_for([np.zeros((225, 400, 3), np.float32)]))
    assert out['img_shape'] == (68, 120)
    assert out['scale_factor'] == pytest.approx((0.3, 68 / 225))
    u, v = project(out['lidar2img'][0], POINT)
    assert v == pytest.approx(V * 68 / 225) and u == pytest.approx(U * 0.3)


@pytest.mark.parametrize('scale', [0.5, 0.8])
def test_drawn_blob_lands_where_the_new_projection_says(scale):
    """An 8x8 white square centred on the projected point (continuous pixel coordinates, pixel i covers
    [i, i+1)) is found, after resizing, at the point's projection through the updated lidar2img."""
    img = np.zeros((180, 320, 3), np.float32)
    img[int(V) - 4:int(V) + 4, int(U) - 4:int(U) + 4] = 255.0  # centroid of pixel centres = (120, 80)
    out = ScaleMultiViewImage(scale)(results_for([img]))
    resized = out['img'][0][..., 0]
    ys, xs = np.mgrid[:resized.shape[0], :resized.shape[1]]
    w = resized / resized.sum()
    centroid = np.array([((xs + 0.5) * w).sum(), ((ys + 0.5) * w).sum()])
    np.testing.assert_allclose(centroid, project(out['lidar2img'][0], POINT), atol=0.05)


def test_refuses_bad_input():
    with pytest.raises(ValueError, match='scale must be > 0'):
        ScaleMultiViewImage(0)
    mixed = dict(img=[np.zeros((10, 20, 3)), np.zeros((12, 20, 3))], lidar2img=np.stack([np.eye(4)] * 2))
    with pytest.raises(ValueError, match='differ in size'):
        ScaleMultiViewImage(0.5)(mixed)
    with pytest.raises(ValueError, match='LoadMultiViewImageFromFiles'):
        ScaleMultiViewImage(0.5)(dict(img=np.zeros((10, 20, 3)), lidar2img=np.eye(4)[None]))


def test_to_float32_converts_after_resizing_uint8_images():
    """The training pipeline scales uint8 images and converts them here (to_float32) for the photometric
    distortion that follows: float32 images of the scaled size, equal to resizing the uint8 image and converting."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)
    out = ScaleMultiViewImage(0.5, to_float32=True)(results_for([img]))
    assert all(im.dtype == np.float32 and im.shape == (90, 160, 3) for im in out['img'])
    plain = ScaleMultiViewImage(0.5)(results_for([img]))
    assert plain['img'][0].dtype == np.uint8
    np.testing.assert_array_equal(out['img'][0], plain['img'][0].astype(np.float32))
    same = ScaleMultiViewImage(1.0, to_float32=True)(results_for([img]))  # no resize: still converted
    assert same['img'][0].dtype == np.float32 and same['img'][0].shape == img.shape


def test_train_pipeline_scales_before_the_photometric_distortion():
    """The dataset config's training pipeline loads uint8, scales (to float32), then distorts: the distortion works
    on the scaled images, not the full-resolution ones."""
    import os.path as osp

    from mmengine.config import Config
    root = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
    cfg = Config.fromfile(osp.join(root, 'configs/bevformer/bevformer_tiny.py'))
    types = [step['type'] for step in cfg.train_dataloader.dataset.pipeline]
    assert types.index('ScaleMultiViewImage') < types.index('MultiViewWrapper')
    load, scale = cfg.train_dataloader.dataset.pipeline[:2]
    assert load['to_float32'] is False and scale['to_float32'] is True and scale['scale'] == 0.5


def test_distorting_the_scaled_image_is_the_same_augmentation():
    """Scale 0.5 then distort (the train pipeline) against distort then scale (BEVFormer's order), with the same
    random draws, on a smooth textured image: brightness and contrast are affine per pixel and commute with the
    bilinear resize; saturation and hue go through HSV, so the two differ by a fraction of a grey level on average."""
    from mmdet3d.datasets.transforms import PhotoMetricDistortion3D
    yy, xx = np.mgrid[0:180, 0:320]
    img = np.stack([127 + 100 * np.sin(xx / 9.0), 127 + 100 * np.cos(yy / 7.0), 127 + 60 * np.sin((xx + yy) / 13.0)],
                   -1).astype(np.uint8)

    def distort(image, seed):
        np.random.seed(seed)
        return PhotoMetricDistortion3D()(dict(img=image))['img']

    for seed in range(6):
        theirs = ScaleMultiViewImage(0.5)(results_for([distort(img.astype(np.float32), seed)], n_cam=1))['img'][0]
        scaled = ScaleMultiViewImage(0.5, to_float32=True)(results_for([img], n_cam=1))['img'][0]
        ours = distort(scaled, seed)
        diff = np.abs(ours - theirs)
        assert ours.shape == theirs.shape == (90, 160, 3)
        assert diff.mean() < 0.6 and np.percentile(diff, 99) < 4.0, (seed, diff.mean(), diff.max())
