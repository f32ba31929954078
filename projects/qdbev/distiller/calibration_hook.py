"""``QuantCalibrationHook``: calibrate the student's quantizers on a few training batches before QAT starts."""
from itertools import islice

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from qdbev.quant import quantizers


@HOOKS.register_module()
class QuantCalibrationHook(Hook):
    """Before training, run ``num_batches`` training batches through the distiller's student in calibration mode
    (:meth:`QDBEVDistiller.calibrate_student`: observers watch, scales freeze), unless its quantizers already hold
    scales (resumed run or ``load_from`` a distiller checkpoint).

    Args:
        num_batches: batches to observe (> 0).
    """

    priority = 'LOW'  # after the checkpoint/resume hooks

    def __init__(self, num_batches: int = 8) -> None:
        if int(num_batches) <= 0:
            raise ValueError(f'QuantCalibrationHook: num_batches must be > 0, got {num_batches}')
        self.num_batches = int(num_batches)

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'calibrate_student'):
            raise TypeError(f'QuantCalibrationHook needs a QDBEVDistiller model, got {type(model).__name__}')
        qs = [q for _, q in quantizers(model.student)]
        if not qs:
            print_log('QuantCalibrationHook: the student has no quantizers (qconfig None), nothing to calibrate',
                      logger='current')
            return
        if any(bool(q.initialized) for q in qs if not q.dynamic):
            print_log('QuantCalibrationHook: student quantizers already hold scales (resumed / loaded), skipping',
                      logger='current')
            return
        n = model.calibrate_student(islice(iter(runner.train_dataloader), self.num_batches))
        print_log(f'QuantCalibrationHook: calibrated {len(qs)} quantizers on {n} batches', logger='current')
