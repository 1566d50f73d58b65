import torch

from vtbench.engine.flops import StepFlops


def _step(model, x, meter, key, tokens):
    with meter.context(key):
        model(x).sum().backward()
    return meter.settle(key, tokens)


def test_each_signature_is_counted_once_and_reused():
    model = torch.nn.Linear(8, 4)
    meter = StepFlops()
    x = torch.randn(2, 8)
    first = _step(model, x, meter, ("a",), (16,))
    assert first == 2 * (2 * 2 * 8 * 4)  # forward and weight gradient: two 2x8x4 matmuls (x needs no grad)
    assert meter._counter is None
    with meter.context(("a",)) as mode:  # known: no counter wraps the next step
        assert mode is None
    meter.settle(("a",), (16,))
    assert len(meter.known) == 1
    assert _step(model, torch.randn(4, 8), meter, ("b",), (16,)) == 2 * first  # a new shape is counted anew


def test_a_step_with_a_surprising_token_count_waits_for_its_count():
    model = torch.nn.Linear(8, 4)
    meter = StepFlops()
    x = torch.randn(2, 8)
    known = _step(model, x, meter, ("a",), (16,))
    # the next step of shape "a" is predicted known, runs uncounted, and turns out to keep 8 tokens
    with meter.context(("a",)):
        model(x).sum().backward()
    assert meter.settle(("a",), (8,)) == 0.0 and meter.pending == {(("a",), (8,)): 1}
    # so the next step is counted, and pays for the pending one too
    assert _step(model, x, meter, ("a",), (8,)) == 2 * known
    assert meter.pending == {}


def test_alternating_token_counts_are_both_credited():
    model = torch.nn.Linear(8, 4)
    meter = StepFlops()
    x = torch.randn(2, 8)
    credited = [_step(model, x, meter, ("a",), (16,) if i % 2 == 0 else (8,)) for i in range(6)]
    # step 1 (8 tokens) runs uncounted under the prediction 16; step 2 is counted, as is every step until the
    # pending signature is: step 3 pays for itself and step 1; afterwards both are known
    per_step = credited[0]
    assert credited == [per_step, 0.0, per_step, 2 * per_step, per_step, per_step]
    assert meter.pending == {} and sum(credited) == 6 * per_step
