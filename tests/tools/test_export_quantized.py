"""tools/export_quantized.py on BEVFormer-nano: a QD-BEV student (random init, W4A6 qconfig of
configs/qdbev/qdbev_nano_synth_w4a6.py, calibrated on random images) exported to the packed file and its image
backbone + neck to ONNX (1 camera, 64x64); and the PTQ route from a bevformer config + FP checkpoint on the session's
synthetic set (config of tests/tools/small_nano.py)."""
import os.path as osp
import re

import pytest
import torch

from tests.tools.small_nano import ROOT, run_tool, write_config

QDBEV_CONFIG = osp.join(ROOT, 'configs/qdbev/qdbev_nano_synth_w4a6.py')
TOOL = osp.join(ROOT, 'tools/export_quantized.py')


def _predict(model, inputs):
    """Boxes, scores and labels of one predict-mode forward from a fresh temporal state."""
    model.temporal_state.reset()
    with torch.no_grad():
        out = model(**inputs)[0].pred_instances_3d
    model.temporal_state.reset()
    return out.bboxes_3d.tensor, out.scores_3d, out.labels_3d


@pytest.fixture(scope='module')
def student_export(tmp_path_factory):
    from qdbev.quant import calibration, quantize_model
    from tools.model_size import architecture_and_qconfig, build_model, load_config, random_inputs
    tmp = tmp_path_factory.mktemp('export')
    arch, qconfig = architecture_and_qconfig(load_config(QDBEV_CONFIG))
    torch.manual_seed(0)
    student = quantize_model(build_model(arch), qconfig)
    with calibration(student):
        student(**random_inputs((64, 64), 1, seed=1))
    student.temporal_state.reset()
    ckpt = str(tmp / 'distiller.pth')
    torch.save(dict(state_dict={'student.' + k: v for k, v in student.state_dict().items()}, meta={}), ckpt)
    out, onnx_path = str(tmp / 'student.qdbev'), str(tmp / 'student.onnx')
    log = run_tool([TOOL, QDBEV_CONFIG, ckpt, '--out', out, '--onnx', onnx_path, '--onnx-img-size', '64', '64'],
                   cwd=str(tmp))
    return student.eval(), out, onnx_path, log


def test_packed_student_reproduces_the_fake_quantized_model(student_export):
    from qdbev.quant import report
    from tools.export_quantized import load_exported
    from tools.model_size import random_inputs
    student, out, _, log = student_export
    inputs = random_inputs((64, 64), 1, seed=2)
    reloaded = load_exported(QDBEV_CONFIG, out)
    for got, ref in zip(_predict(reloaded, inputs), _predict(student, inputs)):
        assert torch.equal(got, ref)
    # 4-bit weights two per byte: the file is within 10 % of the report's size
    expected = report(student, inputs)['total']['size_mb'] * 2 ** 20
    student.temporal_state.reset()
    size = osp.getsize(out)
    assert abs(size / expected - 1.0) < 0.10, (size, expected)
    assert f'{size} bytes on disk' in log and 'reloaded image features identical' in log


def test_onnx_backbone_neck_runs_in_onnxruntime(student_export):
    ort = pytest.importorskip('onnxruntime')
    from tools.export_quantized import ImageFeatures
    student, _, onnx_path, log = student_export
    img = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.add_session_config_entry('session.disable_quant_qdq', '1')
    sess = ort.InferenceSession(onnx_path, opts, providers=['CPUExecutionProvider'])
    assert [i.name for i in sess.get_inputs()] == ['img']
    outs = sess.run(None, {'img': img.numpy()})
    with torch.no_grad():
        refs = ImageFeatures(student)(img)
    assert len(outs) == len(refs) == 1 and outs[0].shape == (1, 128, 4, 4)  # FPN level at stride 16, 128 channels
    # the tolerance of docs/quantization.md "Export": <= 1 % of the output range, >= 95 % within 1e-5
    diff = (torch.from_numpy(outs[0]) - refs[0]).abs()
    assert float(diff.max()) <= 0.01 * float(refs[0].max() - refs[0].min())
    assert float((diff > 1e-5).float().mean()) <= 0.05
    assert 'onnxruntime vs PyTorch max |diff|' in log


def test_ptq_route_from_fp_checkpoint(synth_set, tmp_path):
    from tools.model_size import build_model, load_config
    config = write_config(tmp_path / 'nano_ptq.py', synth_set.root)
    torch.manual_seed(0)
    model = build_model(load_config(str(config)).model.to_dict())
    ckpt = str(tmp_path / 'fp.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    out = str(tmp_path / 'w8a8.qdbev')
    log = run_tool([TOOL, str(config), ckpt, '--out', out, '--w-bits', '8', '--a-bits', '8', '--calib-samples', '1',
                    '--observer', 'minmax'], cwd=str(tmp_path))
    ratio = float(re.search(r'ratio ([0-9.]+)', log).group(1))
    assert abs(ratio - 1.0) < 0.10 and 'reloaded image features identical' in log
    from qdbev.quant.export import load_packed
    data = load_packed(out)
    assert data['meta']['qconfig']['w_bits'] == 8 and data['meta']['qconfig']['a_observer'] == 'minmax'
    assert {e['storage'] for e in data['packed']['weights'].values()} == {'int8'}


def test_bad_arguments_give_one_line(student_export):
    from tools.export_quantized import main
    _, out, _, _ = student_export
    for argv, message in (([QDBEV_CONFIG, out, '--out', 'x', '--w-bits', '4'], 'is a qdbev config'),
                          (['no/such.py', out, '--out', 'x'], 'no/such.py: no such file')):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        text = str(exc.value.code)
        assert message in text and '\n' not in text
