"""Fake-quantized layers under ``torch.compile`` (inference): one graph without breaks (the quantizers' traceable
forward replaces the dynamic-weight reuse and torch's fused kernels, which have no fake-tensor support), and the
numbers of the eager model."""
import pytest
import torch
from torch import nn

from qdbev.quant import (FakeQuantizer, FrozenWeightsCall, NoGradOutputsCopied, QuantConv2d, QuantLinear,
                         SavedActivations, compile_module, compile_quantized, freezing, named_parts,
                         quantizer_guard_filter, replays_cuda_graphs, with_guard_filter)
from qdbev.quant.fake_quantizer import state_version


def _calibrated_act(bits=6):
    a = FakeQuantizer(bits, sync=False)
    with torch.no_grad():
        a.set_mode('observe')
        a(torch.randn(1000) * 2)
        a.freeze()
    return a


def _net():
    torch.manual_seed(0)
    conv1 = QuantConv2d.from_float(nn.Conv2d(3, 8, 3, padding=1),
                                   FakeQuantizer(4, ch_axis=0, dynamic=True, sync=False), _calibrated_act())
    conv2 = QuantConv2d.from_float(nn.Conv2d(8, 8, 3, padding=1, stride=2),
                                   FakeQuantizer(4, ch_axis=0, dynamic=True, sync=False), _calibrated_act())
    fc = QuantLinear.from_float(nn.Linear(8, 5), FakeQuantizer(8, ch_axis=0, dynamic=True, sync=False),
                                _calibrated_act(8))
    return nn.Sequential(conv1, nn.BatchNorm2d(8), nn.ReLU(), conv2, nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), fc).eval()


def test_a_quantized_net_traces_as_one_graph_with_the_eager_numbers():
    net, x = _net(), torch.randn(2, 3, 12, 10) * 2
    with torch.no_grad():
        eager = net(x)
        explained = torch._dynamo.explain(net)(x)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
        traced = torch.compile(net, backend='aot_eager', fullgraph=True)(x)
    assert torch.equal(traced, eager)


def test_inductor_fuses_it_and_keeps_the_numbers():
    net, x = _net(), torch.randn(2, 3, 12, 10) * 2
    with torch.no_grad():
        eager = net(x)
        compiled = torch.compile(net)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_quantizer_states_under_compile():
    x = torch.randn(4, 6) * 3
    off = FakeQuantizer(4, sync=False, mode='off')
    float_bits = FakeQuantizer(32, sync=False)
    act = _calibrated_act(4)
    weight = FakeQuantizer(4, ch_axis=0, dynamic=True, sync=False)
    with torch.no_grad():
        for q in (off, float_bits, act, weight):
            assert torch.equal(torch.compile(q, backend='aot_eager', fullgraph=True)(x), q(x)), q
        observing = FakeQuantizer(4, sync=False, mode='observe')
        with pytest.raises(Exception, match='only calibrated quantizers in quantize mode'):
            torch.compile(observing, backend='aot_eager', fullgraph=True)(x)


def _train_step(net, x):
    net.zero_grad()
    out = net(x)
    out.square().sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def _learnable_net():
    """_net() in training mode with LSQ-learnable activation scales (QAT's state between calibrations)."""
    net = _net().train()
    for m in net.modules():
        if isinstance(m, FakeQuantizer) and not m.dynamic:
            scale = m.scale.detach().clone()
            m.learnable, m.scale = True, nn.Parameter(scale)
    return net


@pytest.mark.parametrize('backend', ['aot_eager', 'inductor'])
def test_compile_quantized_trains_with_the_eager_numbers(backend):
    """A QAT training step (BN in training mode, dynamic 4-bit weights, learnable activation scales) through
    compile_quantized gives the eager step's output and every gradient, the scales' LSQ gradients included."""
    x = torch.randn(2, 3, 12, 10) * 2
    eager_net, compiled_net = _learnable_net(), _learnable_net()
    compiled_net.load_state_dict(eager_net.state_dict())
    router = compile_quantized(compiled_net, backend=backend)
    for _ in range(2):  # the second step runs the cached graph
        out_e, grads_e = _train_step(eager_net, x)
        out_c, grads_c = _train_step(compiled_net, x)
        torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
        assert grads_c.keys() == grads_e.keys() and any('a_quant.scale' in k for k in grads_e)
        for k in grads_e:
            torch.testing.assert_close(grads_c[k], grads_e[k], rtol=1e-4, atol=1e-5, msg=k)
    assert router.compiled_calls == 2
    assert set(compiled_net.state_dict()) == set(eager_net.state_dict())  # checkpoints unchanged


def test_compile_quantized_runs_eagerly_while_a_quantizer_observes():
    net = _net().train()
    router = compile_quantized(net, backend='aot_eager')
    act = net[3].a_quant
    act.set_mode('observe')
    act.observer.reset()
    net(torch.randn(2, 3, 12, 10))
    assert router.compiled_calls == 0 and bool(act.observer.initialized)  # the recalibration saw the batch
    act.freeze()
    net(torch.randn(2, 3, 12, 10))
    assert router.compiled_calls == 1
    act.set_bits(32)  # a float quantizer observing for a later, narrower phase: eager too
    act.set_mode('observe')
    act.observer.reset()
    net(torch.randn(2, 3, 12, 10))
    assert router.compiled_calls == 1 and bool(act.observer.initialized)


def test_the_routers_answer_is_kept_until_a_quantizer_changes(monkeypatch):
    """The router asks its quantizers again only after one of them changed (``state_version``): a mode, a width, the
    dynamic flag or the calibrated flag, by method or by plain assignment."""
    net = _net().train()
    router = compile_quantized(net, backend='aot_eager')
    asked = []
    traceable = FakeQuantizer.traceable
    monkeypatch.setattr(FakeQuantizer, 'traceable', lambda self: asked.append(self) is None and traceable(self))
    assert router.ready() and router.ready()
    assert len(asked) == 6  # three layers' weight and input quantizers, once
    act, weight = net[3].a_quant, net[0].w_quant
    act.mode = 'observe'
    assert not router.ready()
    act.mode = 'quantize'
    assert router.ready()
    weight.dynamic = False  # a weight scale that was never derived: not traceable
    assert not router.ready()
    weight.set_initialized(True)
    assert router.ready()
    act.bits = 32
    assert router.ready() and len(asked) > 6
    n = len(asked)
    assert router.ready() and len(asked) == n


def test_compiled_quantized_modules_guard_the_state_version_not_each_quantizer():
    """``compile_quantized`` compiles with :func:`quantizer_guard_filter`: none of the guards that stay reads below a
    quantizer but its hook dictionaries (the quantizers' types stay too), one reads the state version, and many were
    dropped; the graphs still follow every change of a quantizer: a new width (a phase switch) recompiles and gives
    the eager numbers, a hook registered on a quantizer after compiling runs, and assigning a value a quantizer
    already has changes nothing (no recompile). ``guard_each_quantizer=True`` keeps them all."""
    net, x = _net(), torch.randn(2, 3, 12, 10) * 2
    router = compile_quantized(net, backend='aot_eager')
    guards = []
    dropped = []

    def recording(entries):
        keep = router.guard_filter(entries)
        guards.extend(e for e, k in zip(entries, keep) if k)
        dropped.extend(e for e, k in zip(entries, keep) if not k)
        return keep
    # the router's own compiled forward, rebuilt with a filter that records what the router's filter keeps
    router.compiled = torch.compile(router.eager, **with_guard_filter(dict(backend='aot_eager'), recording))
    with torch.no_grad():
        assert torch.equal(net(x), router.eager(x)) and router.compiled_calls == 1
    below = [e for e in guards if any(f"_modules['{q}']." in e.name for q in ('a_quant', 'w_quant'))
             and e.guard_type != 'EMPTY_NN_MODULE_HOOKS_DICT']
    assert below == [] and len(dropped) > 40, [e.name for e in below]
    assert any('_STATE_VERSION' in e.name for e in guards)
    assert {e.guard_type for e in guards if e.name.endswith(("._modules['a_quant']", "._modules['w_quant']"))} \
        <= {'TYPE_MATCH', 'ID_MATCH'}
    version = state_version()
    net[3].a_quant.mode = 'quantize'  # the value it has
    net[3].a_quant.bits = 6
    assert state_version() == version
    net[3].a_quant.set_bits(3)  # a phase switch: the scale re-derived for the new width, a new graph
    with torch.no_grad():
        assert torch.equal(net(x), router.eager(x)) and router.compiled_calls == 2
    seen = []
    net[3].a_quant.register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    with torch.no_grad():
        net(x)
    assert seen == [(2, 8, 12, 10)] and router.compiled_calls == 3
    version = state_version()
    per_tensor = net[0].w_quant.state_dict()  # a checkpoint whose scale has another shape
    per_tensor['scale'] = per_tensor['scale'].amax()
    net[0].w_quant.load_state_dict(per_tensor)
    assert state_version() != version
    assert compile_quantized(_net(), backend='aot_eager', guard_each_quantizer=True).guard_filter is None
    assert quantizer_guard_filter(nn.Linear(2, 2)) is None  # nothing to filter
    clash = nn.Sequential(_net(), nn.Sequential())
    clash[1].add_module('a_quant', nn.Identity())  # a module of a quantizer's name that is none
    assert quantizer_guard_filter(clash) is None
    assert with_guard_filter(dict(mode='reduce-overhead', dynamic=False), len) == \
        dict(dynamic=False, options={'triton.cudagraphs': True, 'guard_filter_fn': len})


def test_prequantized_weights_are_guarded_on_the_state_version_as_quantizers_are():
    """Inside ``prequantized_weights`` the weights' stand-ins count as quantizers for :func:`quantizer_guard_filter`
    beside a float layer's quantizer, which stays (before, the mix turned the filter off: every quantizer's guards were
    checked at each call, ~0.7 ms of P3's host time on the 2-core CPU). No guard that stays reads below a stand-in
    but its hook dictionaries, the state version is guarded, and each new block's stand-ins change it: a graph traced
    with the weights as constants (``freezing``) retraces in a block with other weights and gives their numbers."""
    from qdbev.quant.export import prequantized_weights
    net, x = _net(), torch.randn(2, 3, 12, 10) * 2
    net[7].w_quant.set_bits(32)  # a float weight: its quantizer stays inside the block
    guards, dropped = [], []

    def recording(entries):
        keep = quantizer_guard_filter(net)(entries)
        guards.extend(e for e, k in zip(entries, keep) if k)
        dropped.extend(e for e, k in zip(entries, keep) if not k)
        return keep
    compiled = torch.compile(net, **with_guard_filter(dict(dynamic=False), recording))
    outs = []
    for scale in (1.0, 0.5):
        with torch.no_grad():
            net[0].weight.mul_(scale)
        with prequantized_weights(net), torch.no_grad():
            assert [type(m.w_quant).__name__ for m in (net[0], net[3], net[7])] == \
                ['_PrequantizedWeight', '_PrequantizedWeight', 'FakeQuantizer']
            assert quantizer_guard_filter(net) is not None
            eager = net(x)
            with freezing():
                outs.append((compiled(x), eager))
    assert not torch.allclose(outs[0][1], outs[1][1])  # the second block's weights give other numbers
    for got, eager in outs:
        torch.testing.assert_close(got, eager, rtol=1e-4, atol=1e-4)
    below = [e for e in guards if "_modules['w_quant']." in e.name and e.guard_type != 'EMPTY_NN_MODULE_HOOKS_DICT']
    assert below == [] and any("_modules['w_quant']." in e.name for e in dropped), [e.name for e in below]
    assert any('_STATE_VERSION' in e.name for e in guards)


def test_a_watched_module_keeps_a_part_eager_while_a_quantizer_outside_it_observes():
    """``watch``: a part that calls quantized layers it does not own (as a decoder calls the head's regression
    branches) runs eagerly while any quantizer of the watched module observes, its own all calibrated."""
    net = _net().train()
    router = compile_quantized(net[0], backend='aot_eager', watch=net)
    outside = net[7].a_quant  # the last layer's, not conv1's
    outside.set_mode('observe')
    net(torch.randn(2, 3, 12, 10))
    assert router.compiled_calls == 0 and all(q.traceable() for q in router.quantizers)
    outside.freeze()
    net(torch.randn(2, 3, 12, 10))
    assert router.compiled_calls == 1


def test_no_grad_outputs_copied_copies_what_calls_that_leave_no_backward_return():
    """NoGradOutputsCopied: a call without grad returns copies of the tensors in its output (own storage, same
    values, the output's structure kept); so does a call with grad none of whose outputs requires grad (a part
    without parameters on inputs without grad: no backward holds its graph step open); a call with grad whose output
    requires grad returns the output itself."""
    store, weight = torch.arange(6.), torch.ones(6, requires_grad=True)
    fn = NoGradOutputsCopied(lambda scale: (store * scale * weight, {'bev': store}, 3))
    out = fn(1.0)
    assert out[1]['bev'] is store and out[2] == 3
    with torch.no_grad():
        prod, rec, n = fn(2.0)
    assert rec['bev'].data_ptr() != store.data_ptr() and torch.equal(rec['bev'], store) and n == 3
    assert torch.equal(prod, store * 2)
    shifted = NoGradOutputsCopied(lambda: {'bev': store})()  # with grad, nothing requires it
    assert shifted['bev'] is not store and torch.equal(shifted['bev'], store)


def test_which_compile_arguments_replay_cuda_graphs():
    assert replays_cuda_graphs(dict(mode='reduce-overhead')) and replays_cuda_graphs(dict(mode='max-autotune'))
    assert replays_cuda_graphs(dict(options={'triton.cudagraphs': True}, dynamic=False))
    assert not replays_cuda_graphs(dict(mode='max-autotune-no-cudagraphs'))
    assert not replays_cuda_graphs(dict(options={'combo_kernels': True})) and not replays_cuda_graphs({})


def test_named_parts_reads_one_path_a_missing_part_and_every_child():
    head = nn.Module()
    head.branches = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 3)])
    head.neck = None
    root = nn.Sequential(head)
    assert named_parts(root, '0.branches.1') == [('0.branches.1', head.branches[1])]
    assert named_parts(root, '0.branches.*') == [('0.branches.0', head.branches[0]), ('0.branches.1', head.branches[1])]
    assert named_parts(root, '0.neck') == [] and named_parts(root, '0.neck.*') == []
    for path in ('0.nope', '0.nope.*', '1.branches'):
        with pytest.raises(AttributeError, match=f"has no module '{path.removesuffix('.*')}'"):
            named_parts(root, path)


@pytest.mark.parametrize('mode', [None, 'reduce-overhead'])
def test_a_part_compiled_for_cuda_graphs_copies_its_no_grad_outputs(mode):
    """In the modes that replay CUDA graphs, a float part compiled by compile_module and a quantized part compiled by
    compile_quantized hand back copies from their calls without grad (a training step's history frames, whose
    outputs the next replay would overwrite), and train with the eager numbers; in the other modes they are
    compiled as before. (The CPU runs no CUDA graphs: aot_eager ignores the mode; the wrapping is what is tested.)"""
    graphs = mode == 'reduce-overhead'
    fp = nn.Linear(4, 2)
    kept = []
    fp.register_forward_hook(lambda module, args, out: kept.append(out))  # as a distiller's recorder keeps features
    compile_module(fp, backend='aot_eager', mode=mode, dynamic=False)
    assert isinstance(fp.forward if graphs else fp._compiled_call_impl, NoGradOutputsCopied) == graphs
    x = torch.randn(3, 4)
    torch.testing.assert_close(fp(x), nn.functional.linear(x, fp.weight, fp.bias))
    with torch.no_grad():
        out = fp(x)
    # the hook keeps what the caller gets: with graphs the copy (the graph's own output would be overwritten at the
    # next replay: session 35, the teacher's BEV recorded inside its compiled encoder)
    assert kept[-1] is out and fp.state_dict().keys() == {'weight', 'bias'}
    eager_net, compiled_net = _learnable_net(), _learnable_net()
    compiled_net.load_state_dict(eager_net.state_dict())
    router = compile_quantized(compiled_net, backend='aot_eager', mode=mode)
    assert isinstance(router.compiled, NoGradOutputsCopied) == graphs
    x = torch.randn(2, 3, 12, 10)
    out_e, grads_e = _train_step(eager_net, x)
    out_c, grads_c = _train_step(compiled_net, x)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
    for k in grads_e:
        torch.testing.assert_close(grads_c[k], grads_e[k], rtol=1e-4, atol=1e-5, msg=k)
    with torch.no_grad():
        torch.testing.assert_close(compiled_net(x), eager_net(x), rtol=1e-5, atol=1e-5)
    assert router.compiled_calls == 2


class _ConvBNNet(nn.Module):
    """A module of its own file (dynamo does not trace torch.nn's own containers as the compiled frame)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_a_frozen_call_holds_the_weights_as_constants_until_other_weights_are_loaded():
    """compile_module(freeze=True) (the frozen teacher's parts): calls without grad trace under inductor's freezing,
    with the eager numbers, here under bf16 autocast as the teacher runs. The graph holds the weights as constants,
    which is why an in-place change of them does not reach it; loading other weights clears the graphs and the next
    call follows them; loading the values the module holds (a resume) keeps them. Calls with grad trace normally."""
    torch.manual_seed(0)
    net = _ConvBNNet().eval().requires_grad_(False)
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 10, 10)

    def eager():
        with torch.no_grad(), torch.autocast('cpu', torch.bfloat16):
            return net._call_impl(x).float()

    def compiled():
        with torch.no_grad(), torch.autocast('cpu', torch.bfloat16):
            return net(x).float()
    compile_module(net, freeze=True, dynamic=False)
    call = net._compiled_call_impl
    assert isinstance(call, FrozenWeightsCall) and not call.traced
    first = compiled()
    assert call.traced
    torch.testing.assert_close(first, eager(), rtol=0.02, atol=0.02)
    original = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():  # in place (nothing should change a frozen module's weights so): the graph keeps its own
        net.fc.weight.mul_(3)
    assert torch.equal(compiled(), first) and not torch.allclose(eager(), first, rtol=0.02, atol=0.02)
    with pytest.warns(UserWarning, match=r'_ConvBNNet \(root\): weights other than those its frozen graphs hold'):
        net.load_state_dict(original)  # other values than the module holds: the graphs go, the next call traces anew
    net.load_state_dict({k: v * 2 if k == 'fc.bias' else v for k, v in original.items()})
    assert call.resets == 1 and not call.traced  # the second load found no graph to clear
    second = compiled()
    torch.testing.assert_close(second, eager(), rtol=0.02, atol=0.02)
    assert not torch.allclose(second, first, rtol=0.02, atol=0.02)
    net.load_state_dict({k: v.clone() for k, v in net.state_dict().items()})  # the values it holds: graphs kept
    assert call.resets == 1 and call.traced and torch.equal(compiled(), second)
    with torch.autocast('cpu', torch.bfloat16):  # with grad: an ordinary graph of the current weights
        net.fc.weight.requires_grad_(True)
        torch.testing.assert_close(net(x).float(), second, rtol=0.02, atol=0.02)
    import torch._inductor.config as inductor_config
    with pytest.raises(RuntimeError, match='inside'):
        with freezing():
            assert inductor_config.freezing
            raise RuntimeError('inside')
    assert inductor_config.freezing is False  # torch's default, put back after every call and on an error


def test_a_frozen_part_compiled_for_cuda_graphs_runs_frozen_copies_its_outputs_and_hooks_see_the_copies():
    """compile_module(freeze=True, mode='reduce-overhead') (the fast config's frozen teacher with CUDA graphs): the
    module's forward becomes the frozen call around the copying call, so a call without grad traces under freezing,
    gives the eager numbers, and a forward hook (a distiller's recorder) keeps the very tensor the caller gets, the
    copy. (The CPU runs no CUDA graphs; inductor skips them there.)"""
    torch.manual_seed(0)
    net = _ConvBNNet().eval().requires_grad_(False)
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        expected = net(x)
    kept = []
    net.register_forward_hook(lambda module, args, out: kept.append(out))
    compile_module(net, freeze=True, dynamic=False, mode='reduce-overhead')
    call = net.forward
    assert isinstance(call, FrozenWeightsCall) and isinstance(call.compiled, NoGradOutputsCopied)
    assert net._compiled_call_impl is None and list(net.state_dict()) == list(_ConvBNNet().state_dict())
    with torch.no_grad():
        out = net(x)
    assert call.traced and kept[-1] is out
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_compile_quantized_refuses_a_float_module_and_a_second_call():
    with pytest.raises(ValueError, match='has no FakeQuantizer; quantize it first'):
        compile_quantized(nn.Linear(2, 2))
    net = _net()
    compile_quantized(net, backend='aot_eager')
    with pytest.raises(ValueError, match='compiled already'):
        compile_quantized(net, backend='aot_eager')


def _kept_mib(fn) -> float:
    """MiB of CPU tensors that one call of ``fn`` leaves alive (its output and what autograd saved for backward),
    from torch.profiler's memory timeline."""
    import json
    import os.path as osp
    import tempfile
    from torch.profiler import ProfilerActivity, profile
    keep = []
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        keep.append(fn())
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'timeline.json')
        prof.export_memory_timeline(path, device='cpu')
        with open(path) as f:
            _, sizes = json.load(f)
    return (sum(sizes[-1]) - sum(sizes[0])) / 2 ** 20


def _conv_bn_relu_net():
    torch.manual_seed(0)
    layers = []
    for _ in range(3):
        layers += [QuantConv2d.from_float(nn.Conv2d(16, 16, 3, padding=1, bias=False),
                                          FakeQuantizer(4, ch_axis=0, dynamic=True, sync=False), _calibrated_act()),
                   nn.BatchNorm2d(16), nn.ReLU()]
    return nn.Sequential(*layers).train()


def test_an_activation_memory_budget_recomputes_the_fake_quantization_in_backward():
    """With the partitioner's default each quantized layer's compiled graph keeps its fake-quantized input and the
    straight-through mask beside what BN/ReLU keep; a budget of 0.5 recomputes them in backward: less than half
    the memory kept for backward, the same output and gradients."""
    x = torch.randn(8, 16, 64, 64)
    results = {}
    for budget in (None, 0.5):
        torch._dynamo.reset()  # each setting compiles its own graph (dynamo's cache does not key on the budget)
        net = _conv_bn_relu_net()
        compile_quantized(net, backend='aot_eager_decomp_partition', activation_memory_budget=budget)
        xg = x.clone().requires_grad_()
        net(xg).square().sum().backward()  # compiles
        kept = _kept_mib(lambda: net(xg))
        net.zero_grad()
        xg.grad = None
        out = net(xg)
        out.square().sum().backward()
        results[budget] = (kept, out.detach(), xg.grad, net[0].weight.grad)
    (kept_default, *numbers_default), (kept_budget, *numbers_budget) = results[None], results[0.5]
    assert kept_default > 12.0 and kept_budget < 0.5 * kept_default, (kept_default, kept_budget)
    for a, b in zip(numbers_default, numbers_budget):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r'activation_memory_budget must be in \(0, 1\]'):
        compile_quantized(_conv_bn_relu_net(), activation_memory_budget=0)


def test_int_codes_let_the_partitioner_keep_int8_codes_with_the_same_numbers():
    """compile_quantized(int_codes=True): the traced quantizers form each fake-quantized tensor from its int8 codes,
    and under a budget the partitioner keeps those 1-byte codes for backward (SavedActivations counts what each
    compiled graph keeps); the output and gradients are the float path's."""
    x = torch.randn(8, 16, 64, 64)
    results = {}
    for codes in (False, True):
        torch._dynamo.reset()
        net = _conv_bn_relu_net()
        compile_quantized(net, backend='aot_eager_decomp_partition', activation_memory_budget=0.5, int_codes=codes)
        assert all(q.int_codes is codes for q in net.modules() if isinstance(q, FakeQuantizer))
        xg = x.clone().requires_grad_()
        with SavedActivations() as saved:
            out = net(xg)  # compiles
        out.square().sum().backward()
        results[codes] = (saved, out.detach(), xg.grad, net[0].weight.grad)
    float_path, codes_path = results[False][0], results[True][0]
    assert len(float_path.graphs) == len(codes_path.graphs) == 1
    assert 'int8' not in float_path.by_dtype() and codes_path.by_dtype()['int8'] >= 0.5  # 3 x [8, 16, 64, 64] / 3
    assert float_path.mib() == pytest.approx(sum(float_path.by_dtype().values()), abs=0.2) and float_path.mib() > 1
    for a, b in zip(results[False][1:], results[True][1:]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_saved_activations_puts_the_partition_function_back():
    import torch._inductor.compile_fx as compile_fx
    original = compile_fx.min_cut_rematerialization_partition
    with SavedActivations():
        assert compile_fx.min_cut_rematerialization_partition is not original
    assert compile_fx.min_cut_rematerialization_partition is original


def test_allow_recompiles_keeps_a_graph_for_every_module_sharing_a_forward():
    """Twelve modules of one class that need a graph each (a Python constant differs): with dynamo's default limit
    of 8 graphs per function the last four run eagerly; after ``allow_recompiles`` each has its graph, and a higher
    setting is kept."""
    from qdbev.quant import allow_recompiles

    class Times(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            return x * self.k

    def graphs_made(limit_first):
        torch._dynamo.reset()
        made = []

        def backend(gm, _inputs):
            made.append(gm)
            return gm.forward
        if limit_first:
            allow_recompiles()
        for k in range(12):
            module = Times(k)
            module.compile(backend=backend)
            assert module(torch.ones(2)).tolist() == [float(k)] * 2  # eager past the limit: the same numbers
        return len(made)
    config = torch._dynamo.config  # (its own patch: pytest's monkeypatch deletes a config entry when it undoes)
    with config.patch(recompile_limit=8):
        assert graphs_made(limit_first=False) == 8
        assert graphs_made(limit_first=True) == 12 and config.recompile_limit == 64
    with config.patch(recompile_limit=100):
        allow_recompiles()
        assert config.recompile_limit == 100
    torch._dynamo.reset()


def test_constant_activation_scales_take_the_scales_out_of_the_graph_inputs_with_the_same_numbers():
    """Inside ``constant_activation_scales`` each calibrated per-tensor activation quantizer applies Eq. 1 with its
    scale as a Python float: eager and compiled outputs equal the quantizers' own, the traced graph reads one input
    per quantizer less (each input costs host time in a batch-1 predict, issue 9), the stand-ins count as quantizers
    for the guard filter, and a second block after recalibration retraces and gives the new scale's numbers. The
    quantizers return on exit; an uncalibrated one stays."""
    from qdbev.quant.export import constant_activation_scales, prequantized_weights
    net, x = _net(), torch.randn(2, 3, 12, 10) * 2
    inputs = []

    def counting(gm, example_inputs):
        inputs.append(sum(n.op == 'placeholder' for n in gm.graph.nodes))
        return gm.forward
    compiled = torch.compile(net, backend=counting, dynamic=False)
    with torch.no_grad():
        with prequantized_weights(net):
            reference = net(x)
            assert torch.equal(compiled(x), reference)
        for scale in (1.0, 0.5):
            net[3].a_quant.scale.mul_(scale)
            with prequantized_weights(net):
                reference = net(x)
            with prequantized_weights(net), constant_activation_scales(net):
                assert [type(m.a_quant).__name__ for m in (net[0], net[3], net[7])] == \
                    ['_ConstantScaleActivation'] * 3
                assert quantizer_guard_filter(net) is not None
                assert torch.equal(net(x), reference)
                assert torch.equal(compiled(x), reference)
    assert inputs[1:] == [inputs[0] - 3] * 2, inputs
    assert type(net[0].a_quant).__name__ == 'FakeQuantizer'
    raw = _net()
    raw[3].a_quant = FakeQuantizer(6, sync=False)
    with constant_activation_scales(raw):
        assert [type(m.a_quant).__name__ for m in raw if hasattr(m, 'a_quant')] == \
            ['_ConstantScaleActivation', 'FakeQuantizer', '_ConstantScaleActivation']
