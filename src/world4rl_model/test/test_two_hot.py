"""Two-hot action encoding: exact reconstruction, differentiability, edges, clipping."""

import pytest
import torch

from world4rl_model.two_hot import TwoHot, bin_centers, two_hot_decode, two_hot_encode


@pytest.mark.parametrize("num_bins", [2, 5, 21, 51])
def test_exact_reconstruction_and_shape(num_bins):
    x = torch.rand(1000, 4, dtype=torch.float64) * 2 - 1
    w = two_hot_encode(x, num_bins)
    assert w.shape == (1000, 4, num_bins)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(1000, 4, dtype=torch.float64))
    assert ((w > 0).sum(-1) <= 2).all()
    # Non-zero weights are on adjacent bins, and those bins bracket x.
    nz = [row.nonzero().flatten() for row in w.reshape(-1, num_bins)]
    assert all(len(i) == 1 or (i[1] - i[0]) == 1 for i in nz)
    torch.testing.assert_close(two_hot_decode(w), x, atol=1e-12, rtol=0)


def test_bins_and_known_values():
    centers = bin_centers(21)
    assert centers[0] == -1
    assert centers[-1] == 1
    assert centers[10] == 0
    w = two_hot_encode(torch.tensor([0.0, 0.05, 0.125]), 21)  # bins every 0.1
    assert w[0, 10] == 1  # exactly on a bin: one-hot
    assert w[0].sum() == 1
    torch.testing.assert_close(w[1, 10:12], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(w[2, 11:13], torch.tensor([0.75, 0.25]))


def test_edges_and_clipping():
    w = two_hot_encode(torch.tensor([-1.0, 1.0, -3.0, 7.0, -1.0 + 1e-7, 1.0 - 1e-7]), 21)
    assert w[0, 0] == 1
    assert w[1, -1] == 1
    torch.testing.assert_close(w[2], w[0])  # clipped to the edge
    torch.testing.assert_close(w[3], w[1])
    torch.testing.assert_close(two_hot_decode(w[4:]), torch.tensor([-1.0 + 1e-7, 1.0 - 1e-7]))
    with pytest.raises(ValueError, match="NaN"):
        two_hot_encode(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="bins"):
        two_hot_encode(torch.zeros(1), 1)


def test_differentiable():
    x = torch.tensor([[-0.33, 0.71, 0.05, -0.9]], dtype=torch.float64, requires_grad=True)
    # The round trip is the identity, so d decode(encode(x)) / dx = 1 inside the range.
    two_hot_decode(two_hot_encode(x)).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))
    # And the encoding's own Jacobian matches finite differences.
    assert torch.autograd.gradcheck(lambda v: two_hot_encode(v, 7), (x.detach().clone().requires_grad_(),))
    # Clipped values get zero gradient.
    y = torch.tensor([1.5, -2.0], requires_grad=True)
    two_hot_decode(two_hot_encode(y)).sum().backward()
    assert (y.grad == 0).all()


def test_module_flattens_and_inverts():
    th = TwoHot(11)
    a = torch.rand(3, 5, 4) * 2 - 1
    enc = th(a)
    assert enc.shape == (3, 5, 44)
    torch.testing.assert_close(th.decode(enc), a)
    torch.testing.assert_close(th.decode(th.encode(a, flatten=False)), a)
