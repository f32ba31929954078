"""projects.qdbev.op_census: the operators a step dispatches, counted under the innermost running model part, autograd's
backward or the rest; views are not counted and the hooks go away afterwards."""
import contextlib
import json

import pytest

import torch
import torch.optim.optimizer as optim_hooks
from torch import nn

from qdbev.quant import compile_module

from projects.qdbev.op_census import BACKWARD, GRAPHS, OPTIMIZER, OUTSIDE, GraphOpCensus, OpCensus, model_parts
from tools.sync_census import main


def test_operators_count_for_the_innermost_part_backward_or_outside():
    torch.manual_seed(0)
    inner = nn.Linear(4, 3)
    outer = nn.Sequential(inner, nn.ReLU())
    x = torch.randn(2, 4)
    with OpCensus({'outer': outer, 'outer.inner': inner}) as census:
        y = outer(x)                   # addmm in inner; relu in outer
        loss = y.sum()                 # outside
        loss.backward()                # backward
        torch.optim.SGD(outer.parameters(), lr=0.1, foreach=True).step()  # optimizer: one foreach add per group
    assert dict(census.counts['outer.inner']) == {'aten.addmm.default': 1}  # the weight's transpose is a view
    assert dict(census.counts['outer']) == {'aten.relu.default': 1}
    assert dict(census.counts[OUTSIDE]) == {'aten.sum.default': 1, 'aten.ones_like.default': 1}  # + the seed
    assert census.totals()[BACKWARD] >= 3  # relu's threshold_backward, mm for the weight, sum for the bias
    assert 'aten.threshold_backward.default' in census.counts[BACKWARD]
    assert dict(census.counts[OPTIMIZER]) == {'aten._foreach_add_.List': 1}
    assert list(census.totals())[0] == BACKWARD  # most first
    assert not outer._forward_pre_hooks and not inner._forward_hooks  # the hooks are removed
    assert not optim_hooks._global_optimizer_pre_hooks and not optim_hooks._global_optimizer_post_hooks
    with OpCensus({}) as census:
        x.view(8).unsqueeze(0).t()  # views alone dispatch nothing counted
    assert census.totals() == {}


def test_graph_census_counts_each_compiled_call_once_and_the_rest_by_owner():
    """GraphOpCensus: a part compiled for CUDA graphs counts its forward, backward and inference graphs' calls under
    GRAPHS and none of their operators; its call without grad copies its output (one clone, a launch outside the
    graph); the eager part, the loss, backward and the optimizer count as OpCensus counts them; views do not."""
    torch.manual_seed(0)
    compiled, eager = nn.Linear(4, 3), nn.Linear(3, 2)
    compile_module(compiled, backend='aot_eager', mode='reduce-overhead', dynamic=False)
    x = torch.randn(2, 4)
    opt = torch.optim.SGD(list(compiled.parameters()) + list(eager.parameters()), lr=0.1, foreach=True)
    eager(compiled(x)).sum().backward()  # compiles
    with torch.no_grad():
        compiled(x)
    with GraphOpCensus({'eager': eager, 'compiled': compiled}) as census:
        eager(compiled(x)).sum().backward()
        with torch.no_grad():
            compiled(x).view(6).t()
        opt.step()
    assert dict(census.counts[GRAPHS]) == {'forward': 1, 'backward': 1, 'inference': 1}
    assert dict(census.counts['compiled']) == {'aten::clone': 1}
    assert dict(census.counts['eager']) == {'aten::linear': 1}
    assert dict(census.counts[OUTSIDE]) == {'aten::sum': 1, 'aten::ones_like': 1}
    assert dict(census.counts[OPTIMIZER]) == {'aten::_foreach_add_': 1}
    assert census.counts[BACKWARD]['aten::mm'] == 2  # the eager linear's (input and weight); the graph's are its own
    assert not compiled._forward_pre_hooks and not optim_hooks._global_optimizer_pre_hooks  # the hooks are removed


def test_model_parts_names_the_parts_a_model_has():
    model = nn.Module()
    model.head = nn.Module()
    model.head.dec = nn.Linear(2, 2)
    model.neck = None
    parts = model_parts(model, 'student.', ['head.dec', 'neck', 'backbone', 'head'])
    assert list(parts) == ['student.head.dec', 'student.head'] and parts['student.head.dec'] is model.head.dec


def test_the_tool_counts_the_quick_qat_steps_operators_by_part(tmp_path):
    """``--ops`` on the quick FP and QAT+VGD steps: the student's and the teacher's parts apart, the fake quantizers'
    operators in the student's image backbone and none in the teacher's, more operators in the student's encoder than
    in the FP model's and in the QAT+VGD step than in the FP step."""
    out = tmp_path / 'census.json'
    assert main(['fp', 'qat', '--quick', '--ops', '--top', '0', '--out-json', str(out)]) == 0
    steps = json.loads(out.read_text())['steps']
    fp, qat = steps['fp']['ops'], steps['qat']['ops']
    assert {'img_backbone', 'pts_bbox_head.transformer.encoder', BACKWARD, OUTSIDE, OPTIMIZER} <= set(fp)
    assert {'student.pts_bbox_head.transformer.encoder', 'teacher.pts_bbox_head.transformer.encoder'} <= set(qat)

    def fake_quant_ops(entry):
        return sum(c for op, c in entry['top'] if 'fake_quantize' in op)
    assert fake_quant_ops(qat['student.img_backbone']) > 0
    assert all('fake_quantize' not in op for op, _ in qat['teacher.img_backbone']['top'])
    # the student runs what the FP model runs plus its quantizers; the teacher's forward is extra
    assert qat['student.pts_bbox_head.transformer.encoder']['total'] > fp['pts_bbox_head.transformer.encoder']['total']
    assert sum(e['total'] for e in qat.values()) > sum(e['total'] for e in fp.values())


def test_the_tool_counts_graph_calls_of_the_fast_configs_compiled_parts(tmp_path):
    """``--ops --graphs`` with the fast config (quick sizes): every compiled part of the FP model, the student and the
    teacher runs as graphs (forward, backward, inference calls counted), so their operators are gone from their
    rows; the QAT+VGD step still runs more operators outside graphs than the FP step (the teacher's BEV preamble,
    the distillation terms, the student's head branches). ``--lookups``: dynamo's cache lookups a call, more in the
    QAT+VGD step (the teacher's parts), with their host time. Without --ops it is refused."""
    out = tmp_path / 'census.json'
    assert main(['fp', 'qat', '--quick', '--ops', '--graphs', '--top', '0', '--qdbev-config',
                 'configs/qdbev/qdbev_tiny_w4a6_fast.py', '--lookups', '2', '--out-json', str(out)]) == 0
    steps = json.loads(out.read_text())['steps']
    fp, qat = steps['fp']['ops'], steps['qat']['ops']
    for ops in (fp, qat):
        assert {kind for kind, _ in ops[GRAPHS]['top']} == {'forward', 'backward', 'inference'}
    assert qat[GRAPHS]['total'] > fp[GRAPHS]['total']  # the teacher's graphs
    # compiled parts: at most the copies of their calls without grad remain
    assert fp['pts_bbox_head.transformer.encoder']['top'] == [['aten::clone', 2]]
    assert qat['student.pts_bbox_head.transformer.encoder']['top'] == [['aten::clone', 2]]
    eager = {step: sum(v['total'] for k, v in ops.items() if k not in (GRAPHS, OPTIMIZER))
             for step, ops in (('fp', fp), ('qat', qat))}
    assert eager['qat'] > eager['fp'] > 0
    looked = {step: steps[step]['guard_lookups'] for step in ('fp', 'qat')}
    assert looked['qat']['lookups'] > looked['fp']['lookups'] > 0 and looked['fp']['calls'] == 2
    assert all(0 < v['ms_min'] <= v['ms_median'] for v in looked.values())
    with pytest.raises(SystemExit):
        main(['fp', '--lookups', '-1'])
    with pytest.raises(SystemExit):
        main(['fp', '--graphs'])
    with pytest.raises(SystemExit, match='sets no model.student_compile dict'):  # the tiny config compiles nothing
        main(['fp', '--ops', '--graphs', '--quick'])


def test_the_tool_counts_the_predicts_with_their_parts_compiled(tmp_path):
    """``--compile-infer-parts`` (predict steps): the parts of both predictors compiled as P3 compiles them run as
    inference graphs (one call each), their operators gone from their rows, and ``--lookups`` times the guard checks
    of the calls. With a training step it is refused."""
    out = tmp_path / 'census.json'
    assert main(['predict_fp', 'predict_qat', '--quick', '--ops', '--top', '0', '--lookups', '2',
                 '--compile-infer-parts', 'img_backbone', 'img_neck', '--out-json', str(out)]) == 0
    steps = json.loads(out.read_text())['steps']
    for step, prefix in (('predict_fp', ''), ('predict_qat', 'student.')):
        ops = steps[step]['ops']
        assert ops[GRAPHS]['top'] == [['inference', 2]], ops[GRAPHS]
        assert ops[prefix + 'img_backbone']['top'] == [['aten::clone', 1]]  # the copy of the graph's output
        assert steps[step]['guard_lookups']['lookups'] == 2
    with pytest.raises(SystemExit):
        main(['qat', '--compile-infer-parts', 'img_backbone'])


def test_infer_backend_inductor_compiles_the_predict_parts_with_torch_compiles_default(monkeypatch):
    """``--infer-backend inductor``: the parts go to ``compile_for_inference`` with no backend (torch.compile's
    default, inductor, as P3 compiles them) instead of the checking backend; it needs ``--compile-infer-parts`` and
    is refused with ``--ops`` (whose graph counts assume the checking backend)."""
    import tools.sync_census as tool
    from qdbev.quant.cudagraph_check import BACKEND
    seen = []
    monkeypatch.setattr(tool.bm, 'compile_for_inference',
                        lambda predictor, mode, parts, backend=None: seen.append((mode, tuple(parts), backend)))
    for choice, backend in (('inductor', None), ('check', BACKEND)):
        seen.clear()
        assert main(['predict_fp', '--quick', '--top', '0', '--lookups', '1', '--compile-infer-parts', 'img_backbone',
                     '--infer-backend', choice]) == 0
        assert seen == [('reduce-overhead', ('img_backbone',), backend)] * 2  # both predictors
    for argv in (['predict_fp', '--infer-backend', 'inductor'],
                 ['predict_fp', '--ops', '--compile-infer-parts', 'img_backbone', '--infer-backend', 'inductor']):
        with pytest.raises(SystemExit):
            main(argv)


def test_the_tool_counts_the_w4a6_predict_with_its_weights_quantized_once(tmp_path, monkeypatch):
    """``--prequantize-weights`` (predict_qat): the student's weights are fake-quantized once before its parts
    compile (as P3 runs with ``tools/benchmark.py --prequantize-weights``), the stand-ins stay in place while the
    steps run and the quantizers return after; so do the activation scales' stand-ins of ``--constant-act-scales``.
    Without predict_qat each is refused."""
    import tools.sync_census as tool
    from qdbev.quant import FakeQuantizer
    from qdbev.quant.export import prequantized_weights
    seen = {}

    @contextlib.contextmanager
    def watched(student):
        with prequantized_weights(student):
            seen['layer'] = layer = student.img_backbone.conv1  # (compiled parts are wrapped later)
            seen['inside'] = type(layer.w_quant).__name__
            yield student
        seen['after'] = layer.w_quant

    real_run = tool.run_steps

    def run_steps(args, fp, distiller, *rest):
        seen['running'] = type(seen['layer'].w_quant).__name__
        seen['act_running'] = type(seen['layer'].a_quant).__name__
        return real_run(args, fp, distiller, *rest)
    monkeypatch.setattr(tool.bm, 'prequantized_weights', watched)
    monkeypatch.setattr(tool, 'run_steps', run_steps)
    out = tmp_path / 'census.json'
    assert main(['predict_qat', '--quick', '--ops', '--top', '0', '--prequantize-weights', '--constant-act-scales',
                 '--compile-infer-parts', 'img_backbone', '--out-json', str(out)]) == 0
    assert seen['inside'] == seen['running'] == '_PrequantizedWeight' and isinstance(seen['after'], FakeQuantizer)
    assert seen['act_running'] == '_ConstantScaleActivation' and isinstance(seen['layer'].a_quant, FakeQuantizer)
    ops = json.loads(out.read_text())['steps']['predict_qat']['ops']
    assert ops[GRAPHS]['top'] == [['inference', 1]], ops[GRAPHS]
    for flag in ('--prequantize-weights', '--constant-act-scales'):
        with pytest.raises(SystemExit):
            main(['predict_fp', flag])
