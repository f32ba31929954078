"""configs/quickstart: the main job's two training configs are seeded, so that a re-run trains the same numbers (two
unseeded runs of one commit differed by 0.8 in the teacher's loss at iteration 20, session 21); the GPU variant of the
teacher inherits the seed."""
import os

import pytest
from mmengine.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize('name', ['bevformer_nano_teacher.py', 'bevformer_nano_teacher_long.py', 'qdbev_nano_w4a6.py'])
def test_the_main_jobs_training_configs_are_seeded(name):
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', 'quickstart', name))
    assert isinstance(cfg.get('randomness', {}).get('seed'), int)
