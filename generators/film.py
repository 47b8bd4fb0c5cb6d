"""Fused linear + sine with a hand-written backward, for training the FiLM-SIREN radiance network.

A FiLM layer is sin(gamma * (W x + b) + beta). With gamma folded into the weights (one latent's points at a
time, or B latents at once with weights [B, out, in]), it is sin(W' x + b') with W' = gamma W and
b' = gamma b + beta, computed by ordinary autograd ops on the small [out, in] matrices. What remains per
point is `linear_sine`: one matmul and one sine.

Stock autograd keeps three [N, out] tensors per layer for the backward (the Linear output for d/dgamma, the
sine's input, plus the layer input); `linear_sine` keeps the input and the sine's argument (two), or with
`recompute` only the input (one) and redoes the matmul in the backward. It also avoids the separate
multiply and add passes of both directions. Values equal the stock ops up to float rounding.
"""
import torch


class _LinearSine(torch.autograd.Function):
    """out [N, out] = sin(x [N, in] @ weight[out, in].T + bias), bias [out] or per row [N, out]; or the
    batched form with a leading latent dimension on all three (see `linear_sine`)."""

    @staticmethod
    def forward(ctx, x, weight, bias, recompute):
        argument = _affine(x, weight, bias)  # autocast (AMP) may run this matmul in half precision
        ctx.recompute = recompute
        ctx.compute_dtype = argument.dtype
        ctx.bias_shape, ctx.bias_dtype = bias.shape, bias.dtype
        if recompute:
            # A per-row bias must be kept to redo the matmul; a per-layer one is a few hundred numbers.
            ctx.save_for_backward(x, weight, bias)
            return argument.sin_()
        ctx.save_for_backward(x, weight, argument)
        return torch.sin(argument)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        # The backward may run outside the forward's autocast region (another thread on CUDA), so it casts
        # to the forward's compute dtype itself and returns gradients in each input's dtype.
        dtype = ctx.compute_dtype
        if ctx.recompute:
            x, weight, bias = ctx.saved_tensors
            argument = _affine(x.to(dtype), weight.to(dtype), bias.to(dtype))
        else:
            x, weight, argument = ctx.saved_tensors
        grad_argument = torch.cos(argument).mul_(grad_out.to(dtype))
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad_argument @ weight.to(dtype)).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = (grad_argument.transpose(-1, -2) @ x.to(dtype)).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            # a bias shared by the rows of a matrix ([out], or [B, out] for B matrices) sums over its rows
            grad_bias = grad_argument if len(ctx.bias_shape) == x.dim() else grad_argument.sum(-2)
            grad_bias = grad_bias.to(ctx.bias_dtype)
        return grad_x, grad_weight, grad_bias, None


def _affine(x, weight, bias):
    if x.dim() == 2:
        return torch.addmm(bias, x, weight.t())
    # per-row biases are [B, N, out] already; a per-matrix one [B, out] broadcasts over the rows
    return torch.baddbmm(bias if bias.dim() == 3 else bias.unsqueeze(1), x, weight.transpose(1, 2))


def linear_sine(x, weight, bias, recompute=False):
    """sin(x [N, in] @ weight [out, in].T + bias [out] or [N, out]) -> [N, out], differentiable in all three.

    Batched form, one matmul for B latents with their own folded weights: x [B, N, in], weight
    [B, out, in], bias [B, out] or per row [B, N, out] -> [B, N, out] (torch.baddbmm).

    `recompute` saves only the inputs and recomputes the matmul in the backward (less memory, one more
    matmul). Not twice differentiable (GRAM's losses never differentiate the generator twice).
    """
    return _LinearSine.apply(x, weight, bias, bool(recompute))
