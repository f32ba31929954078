"""projects.qdbev.op_census: the operators a step dispatches, counted under the innermost running model part, autograd's
backward or the rest; views are not counted and the hooks go away afterwards."""
import json

import torch
import torch.optim.optimizer as optim_hooks
from torch import nn

from projects.qdbev.op_census import BACKWARD, OPTIMIZER, OUTSIDE, OpCensus, model_parts
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
