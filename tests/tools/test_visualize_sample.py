"""tools/visualize_sample.py writes the 6-camera + BEV picture with the devkit-projected boxes."""
import cv2
import numpy as np
import pytest

from qdbev.synth import DatasetConfig, generate_dataset
from tools.visualize_sample import main


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('vis') / 'ds'
    generate_dataset(DatasetConfig(out=str(root), train_scenes=1, val_scenes=0, samples_per_scene=2, scale=0.1,
                                   workers=1), progress=False)
    return str(root)


def test_writes_png_with_boxes_drawn(tiny, tmp_path):
    out = tmp_path / 'v.png'
    main(['--dataroot', tiny, '--version', 'v1.0-mini', '--sample-idx', '1', '--out', str(out)])
    img = cv2.imread(str(out))
    # Camera panels are the 160x90 images upscaled 4x to 640x360: 2 rows x 3, plus a square BEV panel.
    assert img.shape == (720, 3 * 640 + 720, 3)
    # Box.render_cv2 draws front edges in BGR (255, 0, 0) and rear edges in (0, 0, 255): both appear.
    cams = img[:, :1920]
    assert (np.all(cams == (255, 0, 0), axis=-1)).sum() > 50
    assert (np.all(cams == (0, 0, 255), axis=-1)).sum() > 50


def test_bad_token_and_index_are_refused(tiny, tmp_path):
    with pytest.raises(SystemExit):
        main(['--dataroot', tiny, '--version', 'v1.0-mini', '--token', 'nope', '--out', str(tmp_path / 'a.png')])
    with pytest.raises(SystemExit):
        main(['--dataroot', tiny, '--version', 'v1.0-mini', '--sample-idx', '99', '--out', str(tmp_path / 'a.png')])
    with pytest.raises(SystemExit):
        main(['--dataroot', tiny, '--version', 'v1.0-trainval', '--out', str(tmp_path / 'a.png')])
